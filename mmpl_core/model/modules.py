"""The Wan2.1 DiT module tree with the original Wan2.1 parameter names.

Only the parameters live here; the computation is `mmpl_core.model.forward.wan_forward`, which runs over this tree or
over any module tree with the same names (ComfyUI's ``WanModel`` included). Keeping the names identical means that
Wan2.1 1.3B/14B files, ComfyUI files and the official MMPL checkpoints load 1:1 with ``load_state_dict``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import WanConfig


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the activations' dtype (as Wan2.1 does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return nn.functional.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class WanAttention(nn.Module):
    """Projections of one attention layer: ``q, k, v, o`` and RMS norms ``norm_q, norm_k`` over the whole width."""

    def __init__(self, dim: int, eps: float, qk_norm: bool):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()


class WanBlock(nn.Module):
    """One DiT block. Wan's ``norm3`` is the cross-attention norm and ``norm2`` the feed-forward norm."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = FP32LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.self_attn = WanAttention(dim, cfg.eps, cfg.qk_norm)
        self.norm3 = FP32LayerNorm(dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = WanAttention(dim, cfg.eps, cfg.qk_norm)
        self.norm2 = FP32LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim))


class WanHead(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))


class WanDiT(nn.Module):
    """Wan2.1 text-to-video DiT parameters (1095 tensors for 14B, as in the original checkpoints)."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.config = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(WanBlock(cfg) for _ in range(cfg.num_layers))
        self.head = WanHead(cfg)


@torch.no_grad()
def init_random_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Fill every parameter with seeded random values (tests and benchmarks; real models load weights).

    Unlike Wan's training init, the head and modulations are non-zero so that outputs depend on every input.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if name.endswith("modulation"):
            values = torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1])
        elif name.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight")):
            values = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
        elif p.ndim >= 2:
            fan_in = math.prod(p.shape[1:])
            values = torch.randn(p.shape, generator=gen) / math.sqrt(fan_in)
        else:
            values = std * torch.randn(p.shape, generator=gen)
        p.copy_(values.to(p.dtype))
    return model


def build_random_model(cfg: WanConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> WanDiT:
    return init_random_weights(WanDiT(cfg), seed).to(dtype).eval()
