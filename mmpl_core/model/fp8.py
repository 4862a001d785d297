"""8-bit float storage (float8 e4m3fn) for K/V caches and linear weights, computed in a 16/32-bit dtype.

A tensor is stored as `q = x / scale` in float8 with one float32 scale per group of values (per tensor for weights;
per batch, frame and head for K/V). Scales are powers of two chosen so that the group's largest magnitude fits the
format (448 for e4m3fn): dividing and multiplying by them is exact in bfloat16, float16 and float32, so the float8
rounding of `x / scale` is the only error, at most half a float8 step (2^-4 relative; absolute below the smallest
normal value, scale · 2^-6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FLOAT8 = torch.float8_e4m3fn
FLOAT8_MAX = torch.finfo(FLOAT8).max  # 448
# How a tensor may be stored: in the compute dtype, or in float8 with scales (the names used by settings and flags).
STORAGE_DTYPES = ("compute", "float8_e4m3fn")


def check_storage_dtype(name: str, what: str) -> str:
    if name not in STORAGE_DTYPES:
        raise ValueError(f"{what} must be one of {STORAGE_DTYPES}, got {name!r}")
    return name


def power_of_two_scale(amax: torch.Tensor) -> torch.Tensor:
    """The smallest power of two s with amax / s <= FLOAT8_MAX (float32, amax's shape); 1 where amax is 0."""
    amax = amax.float()
    scale = torch.exp2(torch.ceil(torch.log2(amax.clamp(min=torch.finfo(torch.float32).tiny) / FLOAT8_MAX)))
    return torch.where(amax > 0, scale, torch.ones_like(scale))


def quantize(x: torch.Tensor, reduce_dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """x → (q in float8, scale float32), one scale per group of values sharing every index outside `reduce_dims`
    (scale keeps those dims with size 1, so `dequantize(q, scale, dtype)` broadcasts)."""
    scale = power_of_two_scale(x.abs().amax(dim=reduce_dims, keepdim=True))
    return (x / scale.to(x.dtype)).to(FLOAT8), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float8 values times their power-of-two scales, in `dtype` (exact: float8 values are exact in 16-bit floats)."""
    return q.to(dtype).mul_(scale.to(dtype))


class Float8Linear(nn.Module):
    """A linear layer whose weight is stored in float8 with one power-of-two float32 scale (`weight_scale`), and
    dequantised into the input's dtype at each call; the bias stays in the compute dtype.

    weight: [out_features, in_features] float8; weight_scale: [1, 1] float32; bias: [out_features] or None.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantize(linear.weight.detach(), (0, 1))
        self.weight = nn.Parameter(q, requires_grad=False)
        self.register_buffer("weight_scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize(self.weight, self.weight_scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, storage={self.weight.dtype}"


@torch.no_grad()
def store_linear_weights_in_float8(model: nn.Module) -> nn.Module:
    """Replace every `nn.Linear` inside the DiT blocks (`model.blocks`) by a `Float8Linear` in place: the attention
    projections and the feed-forward layers, 97% of a Wan2.1 DiT's parameters. Embeddings, head, norms and
    modulations keep their dtype. Returns `model`; parameter names are unchanged (plus ``weight_scale`` buffers)."""
    for block in model.blocks:
        for name, module in list(block.named_modules()):
            if type(module) is nn.Linear:
                parent_name, _, child = name.rpartition(".")
                setattr(block.get_submodule(parent_name) if parent_name else block, child, Float8Linear(module))
    return model


__all__ = ["FLOAT8", "FLOAT8_MAX", "STORAGE_DTYPES", "Float8Linear", "check_storage_dtype", "dequantize",
           "power_of_two_scale", "quantize", "store_linear_weights_in_float8"]
