"""A seeded procedural video world with prompts: coloured circles and squares bouncing over a gradient.

Everything is a closed-form function of the frame index, so a scene is an *infinite* video: `render(scene, n,
start=s)` gives frames s..s+n−1 of it and any window equals the same frames of a longer render (continuations and
long videos stay consistent). Scenes are described in a 64×64 reference frame; `render` scales positions, radii,
speeds and the pan to the requested size. Objects bounce off the walls of the *screen* (camera pans move the
background texture only, so objects stay in view); a global brightness sine (±20 %) dims and brightens everything.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch

REF = 64.0  # scenes are described in px of a 64×64 reference frame
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.10, 0.10),
    "yellow": (0.98, 0.88, 0.10),
    "green": (0.10, 0.80, 0.20),
    "blue": (0.15, 0.35, 1.00),
    "white": (0.97, 0.97, 0.97),
    "purple": (0.65, 0.20, 0.90),
}
BACKGROUNDS: dict[str, tuple[float, float, float]] = {  # dark / mid tones, far from every object colour
    "black": (0.02, 0.02, 0.03),
    "navy": (0.05, 0.08, 0.32),
    "teal": (0.04, 0.28, 0.28),
    "maroon": (0.32, 0.05, 0.08),
    "grey": (0.30, 0.30, 0.30),
    "olive": (0.28, 0.28, 0.06),
}
SHAPES = ("circle", "square")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
LIGHT_AMPLITUDE = 0.2
STRIPE_PERIOD = 12.0  # px (reference frame) of the scrolling background texture shown when the camera pans
STRIPE_AMPLITUDE = 0.12
EDGE = 1.5  # px over which an object's edge ramps from 0 to 1 (smoothstep: 10–90 % within ~0.9 px)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    radius: float  # px; a square's half side
    x0: float  # centre at frame 0, px
    y0: float
    vx: float  # px / frame
    vy: float


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: tuple[str, str]  # (top, bottom) names in BACKGROUNDS
    light_period: float  # frames
    light_phase: float  # radians
    pan: float  # px / frame of horizontal camera pan (> 0: right, < 0: left, 0: none)


def sample_scene(seed: int, *, max_objects: int = 3, pan_probability: float = 0.3) -> Scene:
    """A random scene: 1..max_objects objects of distinct colours (radius 6..11 px, speed 0.6..1.8 px/frame)."""
    rng = random.Random(seed)
    count = rng.randint(1, max(1, min(max_objects, len(COLOURS))))
    colours = rng.sample(sorted(COLOURS), count)
    objects = []
    for colour in colours:
        radius = rng.uniform(6.0, 11.0)
        speed, angle = rng.uniform(0.6, 1.8), rng.uniform(0.0, 2 * math.pi)
        objects.append(SceneObject(
            shape=rng.choice(SHAPES), colour=colour, radius=radius,
            x0=rng.uniform(radius, REF - radius), y0=rng.uniform(radius, REF - radius),
            vx=speed * math.cos(angle), vy=speed * math.sin(angle),
        ))
    top, bottom = rng.sample(sorted(BACKGROUNDS), 2)
    pan = rng.choice((-1.0, 1.0)) * rng.uniform(0.5, 1.5) if rng.random() < pan_probability else 0.0
    return Scene(tuple(objects), (top, bottom), light_period=rng.uniform(60.0, 200.0),
                 light_phase=rng.uniform(0.0, 2 * math.pi), pan=pan)


def scene_prompt(scene: Scene) -> str:
    """E.g. "two objects: a red circle and a yellow square bounce over a navy to black gradient, the camera pans
    left" (the count, every object's colour and shape, the background and the motion)."""
    n = len(scene.objects)
    things = [f"a {o.colour} {o.shape}" for o in scene.objects]
    listed = things[0] if n == 1 else ", ".join(things[:-1]) + " and " + things[-1]
    count = NUMBERS[n] if n < len(NUMBERS) else str(n)
    top, bottom = scene.background
    article = "an" if top[0] in "aeiou" else "a"
    text = f"{count} object{'s' if n != 1 else ''}: {listed} bounce{'s' if n == 1 else ''} over {article} {top} to " \
           f"{bottom} gradient"
    if scene.pan:
        text += f", the camera pans {'right' if scene.pan > 0 else 'left'}"
    return text


def prompt_vocabulary(scenes: int = 20_000, seed: int = 0) -> tuple[str, ...]:
    """The words and word pairs ("red circle", "navy to") of the prompts of `scenes` random scenes, as the hashed
    text encoder splits and lowercases them: what a demo model trained on this world has seen."""
    from ..text import HashedTextEncoder

    tokenize = HashedTextEncoder(dim=1).tokens
    seen: set[str] = set()
    for i in range(scenes):
        tokens = tokenize(scene_prompt(sample_scene(seed * 1_000_003 + i)))
        seen.update(tokens)
        seen.update(f"{a} {b}" for a, b in zip(tokens, tokens[1:]))
    return tuple(sorted(seen))


def _bounce(p0: float, v: float, lo: float, hi: float, t: torch.Tensor) -> torch.Tensor:
    """Position at frames t of a point moving at v from p0 and reflecting off lo and hi (a triangle wave)."""
    span = max(hi - lo, 1e-6)
    u = torch.remainder((p0 - lo) + v * t, 2 * span)
    return lo + span - (u - span).abs()


def render(scene: Scene, frames: int, height: int = 64, width: int = 64, start: int = 0) -> torch.Tensor:
    """Frames start..start+frames−1 of the scene's infinite video → [3, frames, H, W] float32 in [-1, 1]."""
    sx, sy = width / REF, height / REF
    s = min(sx, sy)
    t = torch.arange(start, start + frames, dtype=torch.float64)  # [T]
    xs = torch.arange(width, dtype=torch.float32) + 0.5  # pixel centres
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    top, bottom = (torch.tensor(BACKGROUNDS[n]).view(3, 1, 1, 1) for n in scene.background)
    g = (ys / height).view(1, 1, height, 1)
    img = (top * (1 - g) + bottom * g).expand(3, frames, height, width)  # vertical gradient
    if scene.pan:  # faint vertical stripes that scroll against the pan
        phase = (xs.view(1, 1, 1, width).double() + scene.pan * sx * t.view(1, frames, 1, 1)) / (STRIPE_PERIOD * s)
        img = img * (1 + STRIPE_AMPLITUDE * torch.sin(2 * math.pi * phase).float())
    img = img.contiguous()
    for obj in scene.objects:
        r = obj.radius * s
        cx = _bounce(obj.x0 * sx, obj.vx * sx, r, width - r, t).float().view(frames, 1, 1)
        cy = _bounce(obj.y0 * sy, obj.vy * sy, r, height - r, t).float().view(frames, 1, 1)
        dx, dy = xs.view(1, 1, width) - cx, ys.view(1, height, 1) - cy  # [T, 1, W], [T, H, 1]
        if obj.shape == "circle":
            dist = torch.sqrt(dx * dx + dy * dy) - r
        else:
            dist = torch.maximum(dx.abs(), dy.abs()) - r
        a = (0.5 - dist / EDGE).clamp(0, 1)  # coverage ramp
        a = (a * a * (3 - 2 * a)).unsqueeze(0)  # smoothstep (10–90 % over ~0.9 px), [1, T, H, W]
        img = img * (1 - a) + torch.tensor(COLOURS[obj.colour]).view(3, 1, 1, 1) * a
    light = 1 + LIGHT_AMPLITUDE * torch.sin(2 * math.pi * t / scene.light_period + scene.light_phase)
    img = img * light.float().view(1, frames, 1, 1)
    return (img.clamp(0, 1) * 2 - 1).contiguous()


def make_batch(seed: int, batch: int, frames: int, height: int = 64, width: int = 64
               ) -> tuple[torch.Tensor, list[str]]:
    """`batch` random scenes (seeds derived from `seed`), each from a random start frame in [0, 200)
    → videos [B, 3, T, H, W] in [-1, 1] and their prompts."""
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**62, size=batch)
    starts = rng.integers(0, 200, size=batch)
    scenes = [sample_scene(int(s)) for s in seeds]
    videos = torch.stack([render(sc, frames, height, width, int(st)) for sc, st in zip(scenes, starts)])
    return videos, [scene_prompt(sc) for sc in scenes]


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a boolean mask → (labels 1..n, 0 = background; n)."""
    try:
        from scipy import ndimage
    except ImportError:
        ndimage = None
    if ndimage is not None:
        labels, n = ndimage.label(mask)
        return labels, int(n)
    labels = np.zeros(mask.shape, np.int32)
    h, w = mask.shape
    n = 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        n += 1
        labels[y0, x0] = n
        stack = [(y0, x0)]
        while stack:  # flood fill
            y, x = stack.pop()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = n
                    stack.append((ny, nx))
    return labels, n


def detect_objects(frame: torch.Tensor, *, threshold: float = 0.2, min_area: int = 6
                   ) -> list[tuple[str, float, float, int]]:
    """Objects of one frame [3, H, W] in [-1, 1] by colour segmentation → [(colour, cx, cy, area px)], largest first.

    Each pixel goes to the nearest named colour allowing for the ±20 % global light (the colour may be scaled by
    0.75..1.25) when within `threshold` (RGB in [0, 1]); connected regions of at least `min_area` px are objects."""
    rgb = ((frame.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).reshape(-1, 3)  # [HW, 3]
    names = list(COLOURS)
    ref = torch.tensor([COLOURS[n] for n in names])  # [K, 3]
    k = ((rgb @ ref.T) / (ref * ref).sum(1)).clamp(1 - 1.25 * LIGHT_AMPLITUDE, 1 + 1.25 * LIGHT_AMPLITUDE)  # [HW, K]
    dist = (rgb[:, None, :] - k[..., None] * ref[None]).norm(dim=-1)  # [HW, K]
    best, index = dist.min(dim=1)
    index = torch.where(best < threshold, index, torch.full_like(index, -1)).view(frame.shape[1:]).numpy()
    found = []
    for i, name in enumerate(names):
        labels, n = _components(index == i)
        for j in range(1, n + 1):
            ys, xs = np.nonzero(labels == j)
            if len(ys) >= min_area:
                found.append((name, float(xs.mean() + 0.5), float(ys.mean() + 0.5), int(len(ys))))
    return sorted(found, key=lambda o: -o[3])
