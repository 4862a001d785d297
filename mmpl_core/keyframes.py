"""Keyframes as pictures: encode an image into a keyframe latent, decode keyframe latents for previews, and lay
them out as a labelled contact sheet."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .layout import SegmentLayout
from .segment import SegmentLatents
from .stitch import keyframe_time
from .vae import TEMPORAL_STRIDE, WanVAE


@torch.no_grad()
def encode_keyframe_image(vae: WanVAE, image: torch.Tensor, frame: int) -> torch.Tensor:
    """An image [3, H, W] in [-1, 1] → the latent [C, h, w] for latent frame `frame`.

    Frame 0 is the VAE's single-pixel-frame latent; any other latent covers 4 pixel frames, so the image is held
    still for those 4 frames (encoded after a first frame of itself).
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"keyframe image must be [3, H, W] in [-1, 1], got {tuple(image.shape)}")
    clip = image[None, :, None].expand(1, 3, 1 if frame == 0 else 1 + TEMPORAL_STRIDE, *image.shape[1:])
    latents = vae.encode(clip.contiguous())[0].float().cpu()  # [C, 1 or 2, h, w]
    return latents[:, 0 if frame == 0 else 1]


@torch.no_grad()
def decode_keyframes(vae: WanVAE, latents: SegmentLatents, frames: Sequence[int]) -> torch.Tensor:
    """Preview images [K, 3, H, W] in [-1, 1] of keyframes.

    Each keyframe j is decoded as ``[f0, fj, fj]`` and its image is the last pixel of the second copy (the first
    copy warms the causal decoder, as in the VAE bridge); frame 0 is the first pixel.
    """
    missing = [f for f in [0, *frames] if f not in latents.known]
    if missing:
        raise ValueError(f"frames {missing} are not planned yet")
    lat = latents.latents
    z = torch.stack([torch.stack([lat[:, 0], lat[:, j], lat[:, j]], dim=1) for j in frames])  # [K, C, 3, h, w]
    pixels = vae.decode(z.to(vae.device))  # [K, 3, 9, H, W]
    picks = torch.tensor([0 if j == 0 else 2 * TEMPORAL_STRIDE for j in frames])
    return pixels[torch.arange(len(frames)), :, picks].float().cpu()


def keyframe_roles(layout: SegmentLayout) -> dict[int, str]:
    """The role of each keyframe, for labels: "initial" (the context frames, or the input image), "terminal" (handed
    to the bridge), and the micro plan's other runs of consecutive frames: "early" when a run follows the initial
    frames directly, "mid" otherwise (the paper's t_a, t_b and t_c anchors)."""
    roles, previous = {}, None
    for frame in layout.keyframes:
        if frame < layout.context_frames:
            roles[frame] = "initial"
        elif frame in layout.terminal:
            roles[frame] = "terminal"
        elif previous is not None and frame == previous + 1 and roles[previous] != "initial":
            roles[frame] = roles[previous]
        else:
            roles[frame] = "early" if frame == layout.context_frames else "mid"
        previous = frame
    return roles


TARGET_ROLES = ("mid", "terminal")


def target_frame(layout: SegmentLayout, role: str | int) -> int:
    """The latent frame a keyframe target of `role` holds: the middle mid keyframe, the last terminal one, or a
    planned keyframe given by its latent index."""
    roles = keyframe_roles(layout)
    planned = [f for f, r in roles.items() if r != "initial"]
    if isinstance(role, int):
        if role not in planned:
            raise ValueError(f"latent {role} is not a planned keyframe of layout {layout.name}; those are {planned}")
        return role
    run = [f for f, r in roles.items() if r == role]
    if role not in TARGET_ROLES or not run:
        raise ValueError(f"role {role!r}: expected one of {[r for r in TARGET_ROLES if r in roles.values()]} or a "
                         f"latent index in {planned}")
    return run[-1] if role == "terminal" else run[len(run) // 2]


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] → uint8 [H, W, 3]."""
    return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def contact_sheet(
    rows: Sequence[torch.Tensor], layout: SegmentLayout, fps: int, frames: Sequence[int], scale: int = 2,
    handoff: str = "terminal",
) -> np.ndarray:
    """A grid of keyframe previews: one row per segment ([K, 3, H, W] each), labelled with segment, latent index and
    time in seconds. Returns uint8 [H', W', 3]."""
    from PIL import Image, ImageDraw

    if not rows:
        raise ValueError("contact sheet needs at least one segment")
    _, _, h, w = rows[0].shape
    th, tw, label_h, margin = h * scale, w * scale, 12, 4
    sheet = Image.new("RGB", (margin + len(frames) * (tw + margin) + 40, margin + len(rows) * (th + label_h + margin)),
                      (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for k, row in enumerate(rows):
        y = margin + k * (th + label_h + margin)
        draw.text((4, y + th // 2 - 5), f"S{k + 1}", fill=(220, 220, 220))
        for i, (frame, image) in enumerate(zip(frames, row)):
            x = 40 + i * (tw + margin)
            thumb = Image.fromarray(to_uint8_image(image)).resize((tw, th), Image.NEAREST)
            sheet.paste(thumb, (x, y))
            draw.text((x, y + th), f"f{frame} {keyframe_time(layout, k, frame, fps, handoff):.1f}s", fill=(170, 170, 170))
    return np.asarray(sheet)
