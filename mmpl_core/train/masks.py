"""Teacher-forcing attention masks from a segment layout.

Training runs one sequence of 2N frames: the N clean frames, then the same N frames noised ([clean | noisy]), both
copies at positions 0..N−1. A noisy frame of group g attends to the noisy frames of g and to the clean frames g
sees; a clean frame of group g attends to the clean frames of g and of what g sees. That is exactly what inference
computes (denoising passes and t=0 cache passes), so any layout — MMPL, its ablations, the AR baseline — trains.
For the Wan T2V layout this equals the official rules (reference §1.4), including "step-2 queries cannot see the
clean terminal frames 19, 20".
"""
from __future__ import annotations

import torch

from ..layout import SegmentLayout


def teacher_forcing_mask(layout: SegmentLayout) -> torch.Tensor:
    """Frame-level boolean mask [2N, 2N]: [query frame, key frame] → may attend (frames 0..N−1 clean, N..2N−1 noisy)."""
    n = layout.num_frames
    mask = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    for g in layout.groups:
        own, seen = list(g.frames), list(g.sees)
        for q in own:
            mask[q, own + seen] = True  # clean copy: a t=0 pass over the group with its context
            mask[n + q, [n + f for f in own]] = True  # noisy copy: its own group, noisy …
            mask[n + q, seen] = True  # … and the clean frames it sees
    return mask


def token_mask(frame_mask: torch.Tensor, tokens_per_frame: int, additive: bool = False) -> torch.Tensor:
    """Expand a frame-level mask to tokens: boolean [L, L], or additive float (0 / −inf) for backends that add masks."""
    mask = frame_mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
    if not additive:
        return mask
    return torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))


def flex_block_mask(frame_mask: torch.Tensor, tokens_per_frame: int, device: torch.device | str = "cpu"):
    """The same mask as a FlexAttention BlockMask (used on CUDA, where it skips fully masked blocks)."""
    from torch.nn.attention.flex_attention import create_block_mask

    frames = frame_mask.to(device)
    length = frames.shape[0] * tokens_per_frame

    def mask_mod(b, h, q_idx, kv_idx):
        return frames[q_idx // tokens_per_frame, kv_idx // tokens_per_frame]

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=length, KV_LEN=length, device=str(device))


def materialize_block_mask(frame_mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Evaluate the FlexAttention mask function densely on CPU (for checking it against `token_mask`)."""
    from torch.nn.attention.flex_attention import create_mask

    length = frame_mask.shape[0] * tokens_per_frame

    def mask_mod(b, h, q_idx, kv_idx):
        return frame_mask[q_idx // tokens_per_frame, kv_idx // tokens_per_frame]

    return create_mask(mask_mod, None, None, length, length, device="cpu")[0, 0]
