"""The MMPL forward of a Wan2.1 DiT: a chunk of latent frames at explicit temporal positions, per-frame timesteps,
text context computed once per prompt, and a KV cache of clean frames with an explicit visible set.

`wan_forward` only calls submodules by their Wan2.1 names (``blocks.N.self_attn.q`` …) and reads the ``modulation``
parameters, so it runs over `WanDiT` or over ComfyUI's ``WanModel`` (whose ops cast and patch weights themselves)
without copying weights.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from einops import rearrange
from torch import nn

from .attention import attention
from .kv_cache import FrameKVCache
from .rope import Rotary, rope_angles
from .streaming import layers, weight_stream


@dataclass(frozen=True)
class ModelGeometry:
    """What the forward needs to know about a module tree, read from its parameter shapes."""

    dim: int
    num_heads: int
    patch_size: tuple[int, int, int]
    out_dim: int
    freq_dim: int
    num_layers: int

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Channels of each head given to the (time, height, width) rotary bands: height and width get
        2·(head_dim // 6) each, time the rest (44 of 128 for the real models)."""
        hw = 2 * (self.head_dim // 6)
        return self.head_dim - 2 * hw, hw, hw


def model_geometry(model: nn.Module, num_heads: int | None = None) -> ModelGeometry:
    """Geometry of a Wan module tree; heads come from ``model.config``/``model.num_heads`` or the Wan rule dim/128."""
    weight = model.patch_embedding.weight
    dim, patch = weight.shape[0], tuple(weight.shape[2:])
    if num_heads is None:
        num_heads = getattr(getattr(model, "config", None), "num_heads", None) or getattr(model, "num_heads", None)
    if num_heads is None:
        num_heads = max(dim // 128, 1)
    return ModelGeometry(
        dim=dim,
        num_heads=int(num_heads),
        patch_size=patch,
        out_dim=model.head.head.weight.shape[0] // math.prod(patch),
        freq_dim=model.time_embedding[0].weight.shape[1],
        num_layers=len(model.blocks),
    )


@dataclass
class TextContext:
    """Cross-attention keys and values of a text, per block: [B, L, heads, head_dim] each.

    B is the number of prompts batched together (2 for classifier-free guidance: conditional, unconditional).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan2.1's timestep embedding [N, dim] (cos half, then sin half), computed in float64."""
    half = dim // 2
    pos = t.flatten().to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = torch.outer(pos, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    return x.unflatten(-1, (num_heads, -1))


def encode_text(model: nn.Module, context: torch.Tensor, geometry: ModelGeometry | None = None) -> TextContext:
    """Project text embeddings [B, L, text_dim] to per-block cross-attention K/V (done once per prompt)."""
    geo = geometry or model_geometry(model)
    text = model.text_embedding(context)
    keys, values = [], []
    for _, block in layers(model.blocks, _streams(model)):
        attn = block.cross_attn
        keys.append(_heads(attn.norm_k(attn.k(text)), geo.num_heads))
        values.append(_heads(attn.v(text), geo.num_heads))
    return TextContext(keys, values)


def _streams(model: nn.Module, cache: FrameKVCache | None = None, visible: Sequence[int] = ()) -> list:
    """What moves to the device one layer ahead: streamed block weights (`streaming.stream_blocks`) and the
    visible K/V of a cache kept in CPU memory."""
    streams = [s for s in (weight_stream(model),) if s is not None]
    if cache is not None and visible:
        streams.append(cache.stream(visible))
    return streams


def _modulated(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, frames: int) -> torch.Tensor:
    """x: [B, F*T, C]; shift/scale: [B, F, 1, C] float32 → (x * (1 + scale) + shift) in x's dtype."""
    xf = x.float().unflatten(1, (frames, -1))
    return (xf * (1 + scale) + shift).flatten(1, 2).type_as(x)


def _gated_add(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, frames: int) -> torch.Tensor:
    out = x.float().unflatten(1, (frames, -1)) + y.float().unflatten(1, (frames, -1)) * gate
    return out.flatten(1, 2).type_as(x)


def wan_forward(
    model: nn.Module,
    x: torch.Tensor,
    positions: Sequence[int],
    timesteps: torch.Tensor,
    text: TextContext,
    *,
    cache: FrameKVCache | None = None,
    visible: Sequence[int] = (),
    write_cache: bool = False,
    frame_mask: torch.Tensor | None = None,
    geometry: ModelGeometry | None = None,
    attention_backend: str = "auto",
    return_output: bool = True,
) -> torch.Tensor | None:
    """Predict the flow velocity of a chunk of latent frames.

    Args:
        model: a Wan2.1 module tree (`WanDiT`, ComfyUI's ``WanModel``, …).
        x: latents [B, C, F, H, W] in the model's compute dtype.
        positions: the true temporal index of each of the F frames (RoPE positions; also the cache address).
        timesteps: [B] or [B, F] flow-matching timesteps in [0, 1000].
        text: cross-attention K/V from `encode_text`, batch B.
        cache: K/V of clean frames. Queries attend to `visible` cached frames plus the chunk itself.
        visible: cached frames this chunk may see (must not contain the chunk's own positions).
        write_cache: store the chunk's K/V in `cache` under `positions` (the t=0 "refresh" of clean frames).
        frame_mask: without a cache, an optional boolean [F, F] mask (query frame i may attend key frame j), or a
            token-level FlexAttention BlockMask (see `mmpl_core.train.masks`).
        return_output: False skips the head (a cache-writing pass whose output is not needed).
    Returns:
        velocity [B, out_dim, F, H, W], or None when `return_output` is False.
    """
    geo = geometry or model_geometry(model)
    batch, _, frames, height, width = x.shape
    positions = [int(p) for p in positions]
    if len(positions) != frames:
        raise ValueError(f"got {len(positions)} positions for {frames} frames")
    if text.batch != batch:
        raise ValueError(f"text context has batch {text.batch}, latents have batch {batch}")
    if cache is None and (visible or write_cache):
        raise ValueError("visible frames / write_cache need a KV cache")
    if cache is not None and frame_mask is not None:
        raise ValueError("frame_mask is for the uncached path; the cached path attends to whole frames")
    if set(visible) & set(positions):
        raise ValueError(f"visible frames {sorted(set(visible) & set(positions))} are also in the chunk")

    pt, ph, pw = geo.patch_size
    grid_t, grid_h, grid_w = frames // pt, height // ph, width // pw
    tokens_per_frame = grid_h * grid_w
    dtype, device = x.dtype, x.device

    rotary = Rotary(rope_angles(positions, grid_h, grid_w, geo.rope_split, device=device))
    if timesteps.ndim == 1:
        timesteps = timesteps[:, None].expand(batch, grid_t)
    e = model.time_embedding(sinusoidal_embedding(geo.freq_dim, timesteps).to(dtype))  # [B*F, C]
    e0 = model.time_projection(e).float().unflatten(-1, (6, geo.dim)).unflatten(0, (batch, grid_t))  # [B,F,6,C]

    h = model.patch_embedding(x).flatten(2).transpose(1, 2)  # [B, N, C]
    token_mask = frame_mask
    if isinstance(frame_mask, torch.Tensor):
        token_mask = frame_mask.to(device).repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)

    blocks = layers(model.blocks, _streams(model, cache, visible))
    with contextlib.closing(blocks):  # leaves the current layer when the loop stops early
        for layer, block in blocks:
            mod = (block.modulation.to(device=device, dtype=torch.float32)[:, None] + e0).unsqueeze(3)  # [B,F,6,1,C]
            shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = mod.unbind(2)

            attn = block.self_attn
            hs = _modulated(block.norm1(h), shift_sa, scale_sa, grid_t)
            q = rotary.apply(_heads(attn.norm_q(attn.q(hs)), geo.num_heads))
            k = rotary.apply(_heads(attn.norm_k(attn.k(hs)), geo.num_heads))
            v = _heads(attn.v(hs), geo.num_heads)
            if cache is not None:
                if write_cache:
                    cache.write(layer, positions, k, v)
                if visible:
                    k_ctx, v_ctx = cache.read(layer, visible)
                    k, v = torch.cat([k_ctx.to(k.dtype), k], 1), torch.cat([v_ctx.to(v.dtype), v], 1)
                    del k_ctx, v_ctx  # a cache in CPU memory: only the copies of two layers stay in flight
            y = attention(q, k, v, token_mask, attention_backend).flatten(2)
            h = _gated_add(h, attn.o(y), gate_sa, grid_t)

            if not return_output and layer == len(model.blocks) - 1:
                break  # the last block's K/V are stored; the rest of the block only feeds the head

            cross = block.cross_attn
            q = _heads(cross.norm_q(cross.q(block.norm3(h))), geo.num_heads)
            y = attention(q, text.keys[layer].to(q.dtype), text.values[layer].to(q.dtype), None, attention_backend)
            h = h + cross.o(y.flatten(2))

            y = block.ffn(_modulated(block.norm2(h), shift_ff, scale_ff, grid_t))
            h = _gated_add(h, y, gate_ff, grid_t)
    if not return_output:
        return None

    head = model.head
    e_frames = e.float().unflatten(0, (batch, grid_t))[:, :, None]  # [B, F, 1, C]
    shift, scale = (head.modulation.to(device=device, dtype=torch.float32)[:, None] + e_frames).unbind(2)
    out = head.head(_modulated(head.norm(h), shift[:, :, None], scale[:, :, None], grid_t))
    return rearrange(
        out, "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)", f=grid_t, h=grid_h, w=grid_w, pt=pt, ph=ph, pw=pw
    )
