"""Initial noise of content (populate) frames near their planning frames: paper Appendix F, in two forms.

- "official" (the authors' code): a populate group's edge frame starts from `weight · anchor + (1 − weight) · ε`,
  where the anchor is the clean latent of its visible temporal neighbour (4←3, 9←10, 13←12, 18←19 on Wan's layout).
  As shipped the official code switches this off (weight 0).
- "paper" (Appendix F as written): every content frame's noise is an interpolation of the noise of the two planning
  frames that bracket it, weighted by temporal distance, so the noise pattern runs on continuously from one planning
  frame to the next. `weight` is the share of the frame's noise variance that comes from that interpolation (the rest
  is its own noise); the result keeps unit variance.

weight 0 leaves the noise untouched in both forms.
"""
from __future__ import annotations

import math

import torch

from .layout import POPULATE, FrameGroup, SegmentLayout
from .sampling import chunk_noise

NOISE_INITS = ("official", "paper")


def boundary_neighbours(group: FrameGroup) -> dict[int, int]:
    """Edge frames of a group → the visible anchor next to them in time (official: 4←3, 9←10, 13←12, 18←19)."""
    pairs = {}
    for f in group.frames:
        for neighbour in (f - 1, f + 1):
            if neighbour not in group.frames and neighbour in group.sees:
                pairs[f] = neighbour
                break
    return pairs


def bracketing_keyframes(layout: SegmentLayout, frame: int) -> tuple[int | None, int | None]:
    """The nearest planning frames (the layout's keyframes) before and after `frame` (None where there is none)."""
    before = [f for f in layout.keyframes if f < frame]
    after = [f for f in layout.keyframes if f > frame]
    return (before[-1] if before else None, after[0] if after else None)


def _frame_noise(layout: SegmentLayout, frame: int, seed: int, segment: int, like: torch.Tensor) -> torch.Tensor:
    """The noise [C, h, w] that sampling used (or would use) for `frame`: its group's chunk noise at its position."""
    g = layout.group_of(frame)
    group = layout.groups[g]
    _, channels, _, height, width = like.shape
    noise = chunk_noise(seed, segment, g, (1, channels, len(group.frames), height, width), like.dtype, like.device)
    return noise[0, :, group.frames.index(frame)]


def initial_noise(
    noise: torch.Tensor,
    layout: SegmentLayout,
    g: int,
    latents: torch.Tensor,
    weight: float,
    form: str,
    *,
    seed: int,
    segment: int,
) -> torch.Tensor:
    """The starting noise [1, C, F, h, w] of group g (whose own chunk noise is `noise`); latents: the segment's
    latents [C, N, h, w] so far (the official form reads the anchors from them)."""
    if form not in NOISE_INITS:
        raise ValueError(f"noise_init must be one of {NOISE_INITS}, got {form!r}")
    group = layout.groups[g]
    if not weight or group.phase != POPULATE:
        return noise
    noise = noise.clone()
    if form == "official":
        for f, anchor in boundary_neighbours(group).items():
            i = group.frames.index(f)
            noise[0, :, i] = weight * latents[:, anchor].to(noise) + (1 - weight) * noise[0, :, i]
        return noise
    for i, f in enumerate(group.frames):
        before, after = bracketing_keyframes(layout, f)
        if before is None and after is None:
            continue
        if before is None or after is None:
            bracket = _frame_noise(layout, before if after is None else after, seed, segment, noise)
        else:
            a, b = (after - f) / (after - before), (f - before) / (after - before)
            bracket = (a * _frame_noise(layout, before, seed, segment, noise)
                       + b * _frame_noise(layout, after, seed, segment, noise)) / math.hypot(a, b)
        noise[0, :, i] = math.sqrt(1 - weight) * noise[0, :, i] + math.sqrt(weight) * bracket
    return noise
