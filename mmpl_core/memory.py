"""Predicted GPU memory and compute of MMPL over a Wan2.1 DiT, from shapes alone (no weights are read).

Memory per device, in bytes, for a device that plans, populates, or does both (the scheduler's roles), for a
`Placement` of the tensors (default: everything on the device in the compute dtype, CFG batched):

* DiT weights: every parameter in the compute dtype (14B in bf16 ≈ 28.6 GB); with block swap only the resident
  blocks plus two block buffers; with float8 weights the blocks' linear weights take one byte (plus the dequantised
  copy of the largest one while it runs).
* KV cache: one `FrameKVCache` shared by both CFG branches (batch 2): 2 (K, V) × layers × batch × slots ×
  tokens_per_frame × dim × bytes, with slots = the frames some group of the run sees (Wan T2V populating: 15;
  frames 13–18 are never cached). Exactly what `SegmentSampler.run` allocates. In CPU memory, the device holds
  only the copies of the layers in flight (two layers' visible K/V); float8 storage adds the dequantised K/V of the
  layer being read.
* text K/V: the cross-attention keys and values of the prompt pair, per layer (`encode_text`).
* activations: the working set of one `wan_forward` over the largest chunk (see `forward_activation_bytes`).
* text encoder / VAE: their weights when resident on the device (0 when offloaded to the CPU); the umT5 runs before
  a run's KV cache exists and the VAE after it is freed, so they add their *working* peaks in separate phases.

Compute: `step_flops` counts the matrix multiplications of one denoising step of a chunk (the FLOP bound).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .layout import PLAN, SegmentLayout
from .model.config import WanConfig
from .model.fp8 import check_storage_dtype
from .model.kv_cache import PLACEMENTS

GB = 1e9
GIB = 2**30
# umT5-XXL (Wan's text encoder) and the Wan2.1 VAE, for when their files are not at hand.
UMT5_XXL_PARAMS = 256384 * 4096 + 24 * (4 * 4096 * 4096 + 3 * 4096 * 10240 + 32 * 64 + 2 * 4096) + 4096
WAN_VAE_PARAMS = 126_892_531
WAN_VAE_BASE_DIM = 96
# One whole 14B T2V segment (plan + head + tail + decode, 50 steps, 480×832) on one H100 in the authors' log (§6.4).
AUTHORS_H100_SEGMENT_SECONDS = 7 * 60 + 7
VAE_FULLRES_MAPS = 10  # full-resolution feature maps alive at the decoder's peak (rough: convs, norms, causal caches)


def dit_params(cfg: WanConfig) -> int:
    """Parameter count of a Wan2.1 DiT (1.3B: 1,418,996,800; 14B: 14,288,491,584)."""
    d, f, p = cfg.dim, cfg.ffn_dim, math.prod(cfg.patch_size)
    norms = 2 * d * 2 if cfg.qk_norm else 0  # self- and cross-attention norm_q, norm_k
    block = 8 * (d * d + d) + norms + (2 * d if cfg.cross_attn_norm else 0) + 2 * d * f + f + d + 6 * d
    embed = cfg.in_dim * p * d + d + cfg.text_dim * d + d + d * d + d + cfg.freq_dim * d + d + d * d + d + d * 6 * d + 6 * d
    head = d * cfg.out_dim * p + cfg.out_dim * p + 2 * d
    return embed + cfg.num_layers * block + head


@dataclass(frozen=True)
class Placement:
    """Where one device keeps MMPL's tensors, and in which dtypes.

    blocks_on_device: DiT blocks whose weights stay on the device (None: all); the others live in pinned CPU memory
        and stream in block by block (`model.streaming.stream_blocks`).
    weight_dtype: "compute" or "float8_e4m3fn" (the blocks' linear weights, per-tensor scales).
    kv_cache: "device" or "cpu" (`FrameKVCache` placement). kv_dtype: "compute" or "float8_e4m3fn".
    cfg_branches: "batched" (one batch-2 forward per guided chunk), "split-plan" or "split" (see `plan.CFG_BRANCHES`).
    text_encoder: "device" (umT5 encodes on the device, kept in CPU memory or not per `offload_text`) or "cpu"
        (it encodes on the CPU and never takes device memory; slower, once per prompt).
    Only kv_dtype, weight_dtype and cfg_branches change the output's bits.
    """

    blocks_on_device: int | None = None
    weight_dtype: str = "compute"
    kv_cache: str = "device"
    kv_dtype: str = "compute"
    cfg_branches: str = "batched"
    text_encoder: str = "device"

    def __post_init__(self):
        check_storage_dtype(self.weight_dtype, "weight_dtype")
        check_storage_dtype(self.kv_dtype, "kv_dtype")
        if self.kv_cache not in PLACEMENTS:
            raise ValueError(f"kv_cache must be one of {PLACEMENTS}, got {self.kv_cache!r}")
        if self.cfg_branches not in ("batched", "split-plan", "split"):
            raise ValueError(f"cfg_branches must be batched, split-plan or split, got {self.cfg_branches!r}")
        if self.text_encoder not in ("device", "cpu"):
            raise ValueError(f"text_encoder must be device or cpu, got {self.text_encoder!r}")
        if self.blocks_on_device is not None and self.blocks_on_device < 0:
            raise ValueError(f"blocks_on_device must be >= 0, got {self.blocks_on_device}")

    def resident_blocks(self, cfg: WanConfig) -> int:
        return cfg.num_layers if self.blocks_on_device is None else min(self.blocks_on_device, cfg.num_layers)

    def forward_batch(self, guidance: float, phase: str) -> int:
        """Batch of one forward of a chunk of `phase`: 2 for batched CFG, else 1 (one forward per branch)."""
        split = self.cfg_branches == "split" or (self.cfg_branches == "split-plan" and phase == PLAN)
        return 1 if guidance == 1.0 or split else 2


FLOAT8_BYTES, SCALE_BYTES = 1, 4
LINEARS_PER_BLOCK = 10  # q, k, v, o of self- and cross-attention, the two feed-forward layers


def block_linear_params(cfg: WanConfig) -> int:
    """Weights (not biases) of one block's linear layers: 8·dim² + 2·dim·ffn_dim."""
    return 8 * cfg.dim * cfg.dim + 2 * cfg.dim * cfg.ffn_dim


def block_bytes(cfg: WanConfig, nbytes: int = 2, weight_dtype: str = "compute") -> int:
    """Bytes of one DiT block's parameters (and float8 scales)."""
    params = (dit_params(cfg) - dit_params(cfg.with_(num_layers=0))) // cfg.num_layers
    if weight_dtype == "compute":
        return params * nbytes
    linear = block_linear_params(cfg)
    return linear * FLOAT8_BYTES + LINEARS_PER_BLOCK * SCALE_BYTES + (params - linear) * nbytes


def dit_device_bytes(cfg: WanConfig, nbytes: int = 2, placement: Placement = Placement()) -> int:
    """The DiT's weights on the device: everything outside the blocks, the resident blocks, the block-swap
    buffers (two, or one with a single streamed block) and, with float8 weights, the dequantised copy of the
    largest linear weight (dim × ffn_dim) while it runs."""
    resident = placement.resident_blocks(cfg)
    buffers = min(2, cfg.num_layers - resident)
    dequantised = cfg.dim * cfg.ffn_dim * nbytes if placement.weight_dtype != "compute" else 0
    outside = dit_params(cfg.with_(num_layers=0)) * nbytes
    return outside + (resident + buffers) * block_bytes(cfg, nbytes, placement.weight_dtype) + dequantised


def tokens_per_frame(cfg: WanConfig, height: int, width: int, stride: int = 8) -> int:
    """Tokens of one latent frame: (H/8/patch_h) × (W/8/patch_w); 1560 at 480×832."""
    return (height // stride // cfg.patch_size[1]) * (width // stride // cfg.patch_size[2])


def cached_frames(layout: SegmentLayout, role: str) -> frozenset[int]:
    """Frames whose K/V a run of `role` ("plan", "populate", "segment") keeps, as `SegmentSampler.run` decides."""
    from .segment import SegmentSampler

    groups = {"plan": layout.plan_groups, "populate": layout.populate_groups,
              "segment": tuple(range(len(layout.groups)))}[role]
    return SegmentSampler._frames_to_cache(layout, groups, frozenset())


def kv_cache_bytes(cfg: WanConfig, slots: int, tpf: int, batch: int = 2, nbytes: int = 2) -> int:
    return 2 * cfg.num_layers * batch * slots * tpf * cfg.dim * nbytes


def kv_device_bytes(cfg: WanConfig, slots: int, visible: int, tpf: int, *, branches: int, batch: int,
                    nbytes: int = 2, kv_cache: str = "device", kv_dtype: str = "compute") -> int:
    """The KV cache's bytes on the device. branches: CFG branches cached (1 or 2); batch: of one forward (2 batched,
    1 split); visible: most cached frames one forward reads. On the device: the whole cache; in CPU memory: the
    copies of the two layers in flight. float8 adds the scales (kept on the device) and the dequantised K/V of the
    layer being read."""
    stored = FLOAT8_BYTES if kv_dtype != "compute" else nbytes
    one_layer_read = 2 * batch * visible * tpf * cfg.dim  # K and V values a forward reads per layer
    if kv_cache == "device":
        total = kv_cache_bytes(cfg, slots, tpf, branches, stored)
    else:
        total = 2 * one_layer_read * stored
    if kv_dtype != "compute":
        total += 2 * cfg.num_layers * branches * slots * cfg.num_heads * SCALE_BYTES + one_layer_read * nbytes
    return total


def text_context_bytes(cfg: WanConfig, batch: int = 2, nbytes: int = 2) -> int:
    return 2 * cfg.num_layers * batch * cfg.text_len * cfg.dim * nbytes


def forward_activation_bytes(cfg: WanConfig, q_tokens: int, k_tokens: int, batch: int = 2, nbytes: int = 2) -> int:
    """Working set of one `wan_forward` layer, the larger of its two phases (the residual stream counted in both).

    self-attention: h, q, k, v over the chunk (4·Nq), K/V gathered with the cache (2·Nk), the output (Nq), plus the
    float32 rotary temporaries (≈ 3·Nq·dim·4 bytes); feed-forward: h and its modulated input (2·Nq·dim), the hidden
    layer before and after GELU (2·Nq·ffn), plus float32 modulation/gating temporaries (≈ 3·Nq·dim·4 bytes).
    Attention kernels are flash-attn / memory-efficient SDPA (no Nq×Nk score matrix).
    """
    d, f = cfg.dim, cfg.ffn_dim
    attn = batch * d * nbytes * (5 * q_tokens + 2 * k_tokens) + 3 * batch * q_tokens * d * 4
    ffn = batch * nbytes * (2 * q_tokens * d + 2 * q_tokens * f) + 3 * batch * q_tokens * d * 4
    return max(attn, ffn)


def vae_decode_bytes(height: int, width: int, base_dim: int = WAN_VAE_BASE_DIM, nbytes: int = 2) -> int:
    """Rough peak working set of the Wan VAE decoder (one latent frame → 4 pixel frames at a time)."""
    return VAE_FULLRES_MAPS * base_dim * 4 * height * width * nbytes


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted bytes on one device for `role`; `peak` is the largest of the three phases."""

    role: str
    weights: int
    kv_cache: int
    kv_slots: int
    text_kv: int
    activations: int
    text_encoder: int  # resident umT5 weights (0 when offloaded)
    vae: int  # resident VAE weights (0 when offloaded)
    text_encoding: int  # umT5 on the device while it encodes (offloaded or not)
    vae_working: int  # VAE weights (if offloaded, moved in) + decoder working set
    extra: dict = field(default_factory=dict)

    @property
    def sampling(self) -> int:
        """Denoising phase: DiT + cache + text K/V + activations + whatever else stays resident."""
        return self.weights + self.kv_cache + self.text_kv + self.activations + self.text_encoder + self.vae

    @property
    def encoding(self) -> int:
        return self.weights + self.vae + max(self.text_encoder, self.text_encoding)

    @property
    def decoding(self) -> int:
        return self.weights + self.text_encoder + max(self.vae, 0) + self.vae_working

    @property
    def peak(self) -> int:
        return max(self.sampling, self.encoding, self.decoding)


def estimate_memory(
    cfg: WanConfig,
    layout: SegmentLayout,
    height: int,
    width: int,
    *,
    role: str = "segment",
    guidance: float = 5.0,
    nbytes: int = 2,
    text_encoder_params: int = UMT5_XXL_PARAMS,
    offload_text: bool = True,
    vae_params: int = WAN_VAE_PARAMS,
    vae_base_dim: int = WAN_VAE_BASE_DIM,
    offload_vae: bool = False,
    placement: Placement = Placement(),
) -> MemoryEstimate:
    """Predicted peak memory of one device running `role` ("plan", "populate" or "segment" = both) at H×W pixels.

    guidance ≠ 1 runs the conditional and unconditional branches: batched (batch 2) through one forward and one
    cache, or split (`placement.cfg_branches`) as two batch-1 forwards with a cache each (the same cache bytes).
    `extra` holds the bytes kept in CPU memory instead ("host_weights", "host_kv").
    """
    branches = 1 if guidance == 1.0 else 2
    tpf = tokens_per_frame(cfg, height, width)
    frames = cached_frames(layout, role)
    groups = [layout.groups[g] for g in {"plan": layout.plan_groups, "populate": layout.populate_groups,
                                         "segment": tuple(range(len(layout.groups)))}[role]]
    acts, batch, visible = 0, 1, 0
    for group in groups:
        nq, b = len(group.frames) * tpf, placement.forward_batch(guidance, group.phase)
        acts = max(acts, forward_activation_bytes(cfg, nq, nq + len(group.sees) * tpf, b, nbytes))
        batch, visible = max(batch, b), max(visible, len(group.sees))
    text_weights = text_encoder_params * nbytes
    vae_weights = vae_params * nbytes
    text_on_cpu = placement.text_encoder == "cpu"
    kv_stored = kv_cache_bytes(cfg, len(frames), tpf, branches, FLOAT8_BYTES if placement.kv_dtype != "compute"
                               else nbytes)
    streamed = cfg.num_layers - placement.resident_blocks(cfg)
    return MemoryEstimate(
        role=role,
        weights=dit_device_bytes(cfg, nbytes, placement),
        kv_cache=kv_device_bytes(cfg, len(frames), visible, tpf, branches=branches, batch=batch, nbytes=nbytes,
                                 kv_cache=placement.kv_cache, kv_dtype=placement.kv_dtype),
        kv_slots=len(frames),
        text_kv=text_context_bytes(cfg, branches, nbytes),
        activations=acts,
        text_encoder=0 if offload_text or text_on_cpu else text_weights,
        vae=0 if offload_vae else vae_weights,
        text_encoding=0 if text_on_cpu else text_weights,
        # every role decodes: the bridge when planning, the segment's video when populating
        vae_working=(vae_weights if offload_vae else 0) + vae_decode_bytes(height, width, vae_base_dim, nbytes),
        extra={"tokens_per_frame": tpf, "batch": batch, "visible": visible, "placement": placement,
               "host_weights": streamed * block_bytes(cfg, nbytes, placement.weight_dtype),
               "host_kv": kv_stored if placement.kv_cache == "cpu" else 0},
    )


def device_bytes_beyond_weights(
    cfg: WanConfig, layout: SegmentLayout, height: int, width: int, *, role: str = "segment", guidance: float = 5.0,
    kv_cache: str = "device", kv_dtype: str = "compute", cfg_branches: str = "batched", nbytes: int = 2,
) -> int:
    """Bytes MMPL needs on the device besides the DiT weights while it samples (what a host that manages the
    weights itself, such as ComfyUI's model management, must keep free):

    the KV cache in its placement (`kv_cache` "device": the whole cache; "cpu": only the copies of the layers in
    flight) and `kv_dtype` ("compute" or "float8_e4m3fn", with its scales and dequantised reads), the text K/V
    of the prompt (both CFG branches when guidance ≠ 1), and the working set of one forward over the largest
    chunk of `role` ("plan", "populate" or "segment" = both).

    cfg: the DiT's shape (`WanConfig`; for a loaded module tree, `checkpoints.infer_config(model.state_dict())`);
    height, width: the video's pixel size (latents are 8× smaller); guidance: the CFG scale (1 = one branch);
    cfg_branches: the plan's setting (batched, split-plan, split); nbytes: bytes per value of the compute dtype.
    Equal to `kv_cache + text_kv + activations` of `estimate_memory` for the same arguments.
    """
    placement = Placement(kv_cache=kv_cache, kv_dtype=kv_dtype, cfg_branches=cfg_branches)
    est = estimate_memory(cfg, layout, height, width, role=role, guidance=guidance, nbytes=nbytes, placement=placement)
    return est.kv_cache + est.text_kv + est.activations


# ----------------------------------------------------------------------------------------------- compute (FLOPs)


def step_flops(cfg: WanConfig, q_tokens: int, k_tokens: int, batch: int = 2, frames: int = 0) -> int:
    """FLOPs of one forward of a chunk (matrix multiplications, 2 per multiply-add): per layer and query token,
    self-attention q, k, v, o (4·d²), cross-attention q, o (2·d²; the text K/V are computed once per prompt), the
    FFN (2·d·ffn); attention scores and values 4·Nq·Nk·d; cross-attention 4·Nq·text_len·d; plus the patch embedding,
    the head and the timestep MLP of the chunk's `frames` (per frame, not per token)."""
    d, f, p = cfg.dim, cfg.ffn_dim, math.prod(cfg.patch_size)
    linear = 2 * q_tokens * (6 * d * d + 2 * d * f)
    attn = 4 * q_tokens * k_tokens * d + 4 * q_tokens * cfg.text_len * d
    io = 2 * q_tokens * d * p * (cfg.in_dim + cfg.out_dim)
    time = 2 * frames * (cfg.freq_dim * d + d * d + 6 * d * d)
    return batch * (cfg.num_layers * (linear + attn) + io + time)


@dataclass(frozen=True)
class GroupCost:
    name: str
    frames: int
    q_tokens: int
    k_tokens: int
    flops_per_step: int


def group_costs(cfg: WanConfig, layout: SegmentLayout, height: int, width: int, batch: int = 2) -> list[GroupCost]:
    tpf = tokens_per_frame(cfg, height, width)
    out = []
    for group in layout.groups:
        nq = len(group.frames) * tpf
        nk = nq + len(group.sees) * tpf
        out.append(GroupCost(group.name, len(group.frames), nq, nk, step_flops(cfg, nq, nk, batch, len(group.frames))))
    return out


def segment_flops(cfg: WanConfig, layout: SegmentLayout, height: int, width: int, steps: int = 50,
                  batch: int = 2, first: bool = True) -> int:
    """FLOPs of one segment: every group denoised for `steps` (the first segment; later ones take their first
    frames from the bridge) plus one t=0 cache pass per group that is cached."""
    cached = cached_frames(layout, "segment")
    total = 0
    for i, cost in enumerate(group_costs(cfg, layout, height, width, batch)):
        group = layout.groups[i]
        denoised = first or i != 0 or layout.context_frames == 0
        total += cost.flops_per_step * (steps if denoised else 0)
        total += cost.flops_per_step * bool(cached & set(group.frames))
    return total


__all__ = [
    "AUTHORS_H100_SEGMENT_SECONDS", "GB", "GIB", "GroupCost", "MemoryEstimate", "Placement", "block_bytes",
    "block_linear_params", "cached_frames", "device_bytes_beyond_weights", "dit_device_bytes", "dit_params",
    "estimate_memory", "forward_activation_bytes", "group_costs", "kv_cache_bytes", "kv_device_bytes",
    "segment_flops", "step_flops", "text_context_bytes", "tokens_per_frame", "vae_decode_bytes",
]
