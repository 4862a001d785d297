"""Wan2.1 DiT: module tree with the original names, and the MMPL forward (explicit positions, frame KV cache)."""
from .config import WAN_CONFIGS, WanConfig, get_config
from .forward import ModelGeometry, TextContext, encode_text, model_geometry, wan_forward
from .kv_cache import FrameKVCache
from .modules import WanDiT, build_random_model, init_random_weights

__all__ = [
    "WAN_CONFIGS",
    "FrameKVCache",
    "ModelGeometry",
    "TextContext",
    "WanConfig",
    "WanDiT",
    "build_random_model",
    "encode_text",
    "get_config",
    "init_random_weights",
    "model_geometry",
    "wan_forward",
]
