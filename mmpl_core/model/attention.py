"""Attention kernels: flash-attn when it is installed and usable (CUDA, fp16/bf16, no mask), PyTorch SDPA otherwise."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=1)
def _flash_attn_func():
    try:
        from flash_attn import flash_attn_func  # type: ignore[import-not-found]
    except Exception:  # not installed, or built for another torch/CUDA
        return None
    return flash_attn_func


def _is_block_mask(mask) -> bool:
    return type(mask).__name__ == "BlockMask"


def backend_for(q: torch.Tensor, mask=None, prefer: str = "auto") -> str:
    """Name of the kernel `attention` uses for these inputs: "flash_attn", "sdpa" or "flex" (a BlockMask)."""
    if _is_block_mask(mask):
        return "flex"
    if prefer == "sdpa" or mask is not None:
        return "sdpa"
    usable = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _flash_attn_func() is not None
    if prefer == "flash_attn" and not usable:
        raise RuntimeError("flash-attn was requested but is not usable here (needs CUDA, fp16/bf16 and flash_attn)")
    return "flash_attn" if usable else "sdpa"


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, prefer: str = "auto"
) -> torch.Tensor:
    """Multi-head attention over [B, L, H, D] tensors; returns [B, Lq, H, D].

    mask: optional boolean [Lq, Lk] (True = may attend) or additive float mask, broadcast over batch and heads, or a
        FlexAttention BlockMask (training on CUDA).
    """
    backend = backend_for(q, mask, prefer)
    if backend == "flash_attn":
        return _flash_attn_func()(q, k, v)
    if backend == "flex":
        from torch.nn.attention.flex_attention import flex_attention

        return flex_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=mask).transpose(1, 2)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)
