"""Macro-planning hand-off between segments: the VAE bridge, the naive baseline, and colour anchoring.

The VAE bridge (paper Fig. 4) turns segment k's terminal keyframes into segment k+1's first latents through pixel
space, so the next segment starts from a proper "first frame" latent instead of a mid-video one. Because the Wan
VAE is causal, only 4 latents need decoding — ``[f0, t0, t0, t1]`` (f0 fills the VAE's single-frame first slot, the
first copy of t0 warms the causal cache) — and only the last 5 pixel frames (the last pixel of the second t0 copy
and the 4 of t1) need encoding. The official code decodes 21 latents and encodes 81 frames for the same result.
"""
from __future__ import annotations

import torch

from .vae import TEMPORAL_STRIDE, WanVAE


def bridge_pixel_frames(context_frames: int = 2) -> int:
    """Pixel frames re-encoded into `context_frames` latents: 1 (first-frame latent) + 4 per further latent."""
    return 1 + TEMPORAL_STRIDE * (context_frames - 1)


def _check_inputs(first: torch.Tensor, terminal: torch.Tensor) -> None:
    if (
        first.ndim != 3
        or terminal.ndim != 4
        or terminal.shape[1] != 2
        or terminal.shape[0] != first.shape[0]
        or terminal.shape[2:] != first.shape[1:]
    ):
        raise ValueError(
            f"bridge needs the first latent [C, h, w] and 2 terminal latents [C, 2, h, w], "
            f"got {tuple(first.shape)} and {tuple(terminal.shape)}"
        )


@torch.no_grad()
def vae_bridge(vae: WanVAE, first: torch.Tensor, terminal: torch.Tensor) -> torch.Tensor:
    """The 4-latent VAE bridge.

    Args:
        first: latent frame 0 of segment k, [C, h, w].
        terminal: the two terminal keyframes of segment k, [C, 2, h, w].
    Returns:
        the first two latents of segment k+1, [C, 2, h, w] (float32, CPU).
    """
    _check_inputs(first, terminal)
    z = torch.stack([first, terminal[:, 0], terminal[:, 0], terminal[:, 1]], dim=1)[None]  # [1, C, 4, h, w]
    pixels = vae.decode(z)  # [1, 3, 13, H, W]
    tail = pixels[:, :, -bridge_pixel_frames():]  # last pixel of the second t0 copy + the 4 of t1
    return vae.encode(tail)[0].float().cpu()


@torch.no_grad()
def full_length_bridge(vae: WanVAE, first: torch.Tensor, terminal: torch.Tensor, num_frames: int = 21) -> torch.Tensor:
    """The official code's bridge, kept as the reference for `vae_bridge`: decode a full zero-padded segment of
    `num_frames` latents, put the 5 wanted pixel frames at the start of a black full-length video, encode it all."""
    _check_inputs(first, terminal)
    if num_frames < 4:
        raise ValueError(f"the full-length bridge decodes at least 4 latents, got num_frames={num_frames}")
    c, h, w = first.shape
    z = torch.zeros(1, c, num_frames, h, w)
    z[0, :, 0], z[0, :, 1], z[0, :, 2], z[0, :, 3] = first, terminal[:, 0], terminal[:, 0], terminal[:, 1]
    pixels = vae.decode(z)  # [1, 3, 1 + 4(N-1), H, W]
    padded = torch.full_like(pixels, -1.0)  # the official code pads with zeros in [0, 1] pixel space, i.e. black
    wanted = bridge_pixel_frames()
    start = 1 + TEMPORAL_STRIDE * 2 - 1  # pixel 8: the last pixel decoded from the second t0 copy
    padded[:, :, :wanted] = pixels[:, :, start : start + wanted]
    return vae.encode(padded)[0, :, :2].float().cpu()


@torch.no_grad()
def reverse_bridge(vae: WanVAE, context: torch.Tensor) -> torch.Tensor:
    """Hand-off keyframes [C, 2, h, w] whose `vae_bridge` gives back `context` [C, 2, h, w] (a segment's first two
    latents): the way a loop's last segment ends where the first began.

    `context` decodes to 5 pixel frames p0..p4 and the bridge re-encodes the last pixel of the first hand-off latent
    plus the 4 of the second, so the first hand-off latent is p0 held for its 4 frames and the second is p1..p4
    (encoded after a first frame, as mid-video latents).
    """
    if context.ndim != 4 or context.shape[1] != 2:
        raise ValueError(f"reverse bridge needs a segment's first 2 latents [C, 2, h, w], got {tuple(context.shape)}")
    pixels = vae.decode(context[None].to(vae.device))  # [1, 3, 5, H, W]
    first = pixels[:, :, :1]
    clip = torch.cat([first, first.expand(-1, -1, TEMPORAL_STRIDE, -1, -1), pixels[:, :, 1:]], dim=2)
    return vae.encode(clip.contiguous())[0, :, 1:].float().cpu()


def naive_bridge(terminal: torch.Tensor) -> torch.Tensor:
    """Reuse the terminal latents directly as the next segment's first latents (paper Appendix E baseline)."""
    if terminal.ndim != 4 or terminal.shape[1] != 2:
        raise ValueError(f"naive bridge needs terminal latents [C, 2, h, w], got {tuple(terminal.shape)}")
    return terminal.clone().float().cpu()


def anchor_colour(context: torch.Tensor, reference: torch.Tensor, strength: float) -> torch.Tensor:
    """Move the per-channel mean/std of `context` latents [C, F, h, w] towards those of `reference` [C, F', h, w].

    Wan latent channels carry most of a frame's colour statistics, so matching them keeps later segments' colours
    near segment 1's. strength 0 returns `context` unchanged, 1 matches exactly.
    """
    if strength == 0.0:
        return context
    dims = (1, 2, 3)
    mean, std = context.mean(dims, keepdim=True), context.std(dims, keepdim=True).clamp_min(1e-6)
    ref_mean, ref_std = reference.mean(dims, keepdim=True), reference.std(dims, keepdim=True)
    matched = (context - mean) / std * ref_std + ref_mean
    return torch.lerp(context, matched, strength)
