"""Wan2.1 DiT configurations (the original Wan2.1 hyper-parameters, plus tiny sizes for tests and demos)."""
from __future__ import annotations

from dataclasses import dataclass, replace

ROPE_THETA = 10000.0
ROPE_MAX_POSITIONS = 1024


@dataclass(frozen=True)
class WanConfig:
    """Hyper-parameters of a Wan2.1 text-to-video DiT (names follow the original Wan2.1 code)."""

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ValueError(f"WanConfig: dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"WanConfig: head_dim {self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def with_(self, **changes) -> "WanConfig":
        return replace(self, **changes)


WAN_CONFIGS: dict[str, WanConfig] = {
    "1.3B": WanConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "14B": WanConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    # Smallest shapes ComfyUI's Wan detection loads correctly (it assumes head_dim 128).
    "tiny": WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2),
    # The embedded demo model's shape (12.4 M parameters).
    "demo": WanConfig(dim=384, ffn_dim=1536, num_heads=3, num_layers=4),
    # Fast unit-test shape: not ComfyUI-loadable (head_dim 16, text_dim 32).
    "micro": WanConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=32, freq_dim=32),
}


def get_config(name: str) -> WanConfig:
    try:
        return WAN_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model size {name!r}; expected one of {sorted(WAN_CONFIGS)}") from None
