"""3-D rotary position embeddings of Wan2.1 with explicit temporal positions.

A token at (frame position f, row y, column x) rotates its head channels by angles built from three bands:
time (indexed by the frame's true latent index, which need not be contiguous), height and width.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .config import ROPE_MAX_POSITIONS, ROPE_THETA


def _band_frequencies(band_dim: int, device) -> torch.Tensor:
    exponent = torch.arange(0, band_dim, 2, dtype=torch.float64, device=device) / band_dim
    return 1.0 / (ROPE_THETA**exponent)


def rope_angles(
    positions: Sequence[int] | torch.Tensor, height: int, width: int, split: tuple[int, int, int], device=None
) -> torch.Tensor:
    """Rotation angles for a grid of tokens.

    Args:
        positions: the temporal position of each of F frames (0 <= p < 1024).
        height, width: token grid (latent size divided by the patch size).
        split: head channels given to the (time, height, width) bands.
    Returns:
        float64 tensor [F*height*width, head_dim // 2], token order frame-major, then row, then column.
    """
    pos = torch.as_tensor(positions, dtype=torch.float64, device=device).flatten()
    if pos.numel() and (pos.min() < 0 or pos.max() >= ROPE_MAX_POSITIONS):
        raise ValueError(f"frame positions must lie in [0, {ROPE_MAX_POSITIONS}), got {pos.tolist()}")
    t_dim, h_dim, w_dim = split
    frames = pos.numel()
    ang_t = torch.outer(pos, _band_frequencies(t_dim, device))
    ang_h = torch.outer(torch.arange(height, dtype=torch.float64, device=device), _band_frequencies(h_dim, device))
    ang_w = torch.outer(torch.arange(width, dtype=torch.float64, device=device), _band_frequencies(w_dim, device))
    grid = (frames, height, width)
    return torch.cat(
        [
            ang_t[:, None, None, :].expand(*grid, -1),
            ang_h[None, :, None, :].expand(*grid, -1),
            ang_w[None, None, :, :].expand(*grid, -1),
        ],
        dim=-1,
    ).reshape(frames * height * width, -1)


class Rotary:
    """cos/sin of the rotation angles, ready to apply to [B, N, H, D] queries and keys."""

    def __init__(self, angles: torch.Tensor, dtype: torch.dtype = torch.float32):
        self.cos = angles.cos().to(dtype)[None, :, None, :]
        self.sin = angles.sin().to(dtype)[None, :, None, :]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate consecutive channel pairs (x[2i], x[2i+1]) as complex numbers, as Wan2.1 does."""
        pairs = x.float().unflatten(-1, (-1, 2))
        real, imag = pairs[..., 0], pairs[..., 1]
        out = torch.stack((real * self.cos - imag * self.sin, real * self.sin + imag * self.cos), dim=-1)
        return out.flatten(-2).type_as(x)
