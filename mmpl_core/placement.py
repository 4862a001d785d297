"""Choosing a `Placement` for a memory budget: the one that fits with the least predicted time.

Time model (per segment, one device, `memory.group_costs` FLOPs): each layer of a forward takes
max(compute, transfer), because the next layer's copies (streamed block weights, K/V of a cache in CPU memory) run
on a side stream while the current layer computes. compute = the layer's FLOPs at the device's peak TFLOP/s, plus
float8 dequantisation as device-memory traffic (3 bytes per value: read 1, write 2); transfer = bytes over PCIe at
an effective bandwidth (host→device; the K/V written back travel the other direction of the full-duplex link and
are not counted). The predicted slowdown is against the unconstrained placement (everything resident, 16-bit,
CFG batched), whose time is the FLOP bound. Decoding is not timed, nor is umT5 encoding on the device (a fraction of
a second); encoding on the CPU is charged once per segment (a prompt per segment, the worst case) at `CPU_TFLOPS`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from .layout import FrameGroup, SegmentLayout
from .memory import (
    FLOAT8_BYTES, GIB, UMT5_XXL_PARAMS, MemoryEstimate, Placement, block_bytes, block_linear_params, cached_frames,
    estimate_memory,
    step_flops, tokens_per_frame,
)
from .model.config import WanConfig

PCIE_GBPS = 25.0  # PCIe 4.0 x16, effective host↔device GB/s
RESERVED_GIB = 2.0  # CUDA context, cuBLAS workspaces and allocator fragmentation: left out of a device's budget


def usable_bytes(total_gib: float) -> int:
    """What a device of `total_gib` GiB has for weights, KV cache and activations (less `RESERVED_GIB`)."""
    return int((total_gib - RESERVED_GIB) * GIB)
CPU_TFLOPS = 1.0  # a desktop CPU's 16-bit matmul throughput, for umT5 encoding on the CPU
TEXT_TOKENS = 512  # umT5 encodes the prompt padded to 512 tokens


@dataclass(frozen=True)
class DeviceSpeed:
    """Assumed speeds of a device: dense 16-bit tensor TFLOP/s (fp32 accumulation), memory GB/s, PCIe GB/s."""

    name: str
    tflops: float
    memory_gbps: float
    pcie_gbps: float = PCIE_GBPS


# A representative card per memory size (datasheet peaks; sustained throughput is lower, which makes transfers
# relatively cheaper, so slowdowns predicted at peak are upper bounds).
TYPICAL_DEVICES: dict[float, DeviceSpeed] = {
    80: DeviceSpeed("H100 SXM", 989.0, 3350.0),
    48: DeviceSpeed("L40S", 362.0, 864.0),
    24: DeviceSpeed("RTX 4090", 165.2, 1008.0),
    16: DeviceSpeed("RTX 4080", 97.5, 717.0),
    12: DeviceSpeed("RTX 4070", 58.3, 504.0),
}


def typical_device(gib: float) -> DeviceSpeed:
    """The card of `TYPICAL_DEVICES` with the most memory not above `gib` (the smallest one below them all)."""
    fitting = [size for size in TYPICAL_DEVICES if size <= gib]
    return TYPICAL_DEVICES[max(fitting) if fitting else min(TYPICAL_DEVICES)]


@dataclass(frozen=True)
class PlacementCost:
    placement: Placement
    memory: MemoryEstimate
    budget: int  # bytes
    seconds: float  # predicted, one segment
    flop_seconds: float  # the FLOP bound of the same segment
    transfer_bytes: int  # host→device bytes per segment

    @property
    def peak(self) -> int:
        return self.memory.peak

    @property
    def fits(self) -> bool:
        return self.peak <= self.budget

    @property
    def slowdown(self) -> float:
        return self.seconds / self.flop_seconds

    @property
    def lossy(self) -> int:
        """How many choices change the output's bits (float8 weights or K/V, split CFG)."""
        p = self.placement
        return (p.weight_dtype != "compute") + (p.kv_dtype != "compute") + (p.cfg_branches != "batched")


def chunk_seconds(cfg: WanConfig, group: FrameGroup, tpf: int, placement: Placement, device: DeviceSpeed, *,
                  guidance: float = 5.0, nbytes: int = 2) -> tuple[float, float, int]:
    """(predicted seconds, FLOP-bound seconds, host→device bytes) of one evaluation of a group's chunk: one batched
    forward, or one forward per CFG branch when split."""
    layers, resident = cfg.num_layers, placement.resident_blocks(cfg)
    kv_bytes = FLOAT8_BYTES if placement.kv_dtype != "compute" else nbytes
    streamed_block = block_bytes(cfg, nbytes, placement.weight_dtype)
    batch = placement.forward_batch(guidance, group.phase)
    passes = 2 // batch if guidance != 1.0 else 1
    nq, nk = len(group.frames) * tpf, (len(group.frames) + len(group.sees)) * tpf
    flops = step_flops(cfg, nq, nk, batch, len(group.frames)) / layers
    read = 2 * batch * len(group.sees) * tpf * cfg.dim  # K and V values read per layer
    kv_in = read * kv_bytes if placement.kv_cache == "cpu" else 0
    dequant = 3 * block_linear_params(cfg) if placement.weight_dtype != "compute" else 0
    dequant += 3 * read if placement.kv_dtype != "compute" else 0
    compute = flops / (device.tflops * 1e12) + dequant / (device.memory_gbps * 1e9)
    per_forward = sum(max(compute, (kv_in + streamed_block * (layer >= resident)) / (device.pcie_gbps * 1e9))
                      for layer in range(layers))
    moved = layers * kv_in + (layers - resident) * streamed_block
    return passes * per_forward, passes * flops * layers / (device.tflops * 1e12), passes * moved


def segment_time(cfg: WanConfig, layout: SegmentLayout, height: int, width: int, placement: Placement,
                 device: DeviceSpeed, *, steps: int = 50, guidance: float = 5.0, nbytes: int = 2
                 ) -> tuple[float, float, int]:
    """(predicted seconds, FLOP-bound seconds, host→device bytes) of one segment (every group denoised, as the
    first segment, plus the t=0 pass of each cached group) under `placement` on `device`."""
    tpf, cached = tokens_per_frame(cfg, height, width), cached_frames(layout, "segment")
    total = flop_total = 0.0
    moved = 0
    for group in layout.groups:
        forwards = steps + bool(cached & set(group.frames))
        seconds, flop_seconds, chunk_bytes = chunk_seconds(cfg, group, tpf, placement, device, guidance=guidance,
                                                           nbytes=nbytes)
        total += forwards * seconds
        flop_total += forwards * flop_seconds
        moved += forwards * chunk_bytes
    return total, flop_total, moved


def placement_cost(cfg, layout, height, width, placement, budget_gib, device, *, steps=50, guidance=5.0, nbytes=2,
                   **memory_kwargs) -> PlacementCost:
    memory = estimate_memory(cfg, layout, height, width, role="segment", guidance=guidance, nbytes=nbytes,
                             placement=placement, **memory_kwargs)
    seconds, _, moved = segment_time(cfg, layout, height, width, placement, device, steps=steps, guidance=guidance,
                                     nbytes=nbytes)
    _, flop_seconds, _ = segment_time(cfg, layout, height, width, Placement(), device, steps=steps,
                                      guidance=guidance, nbytes=nbytes)
    if placement.text_encoder == "cpu":  # 2 FLOPs per parameter and token (embedding lookups overcounted)
        prompts = 1 if guidance == 1.0 else 2
        text_params = memory_kwargs.get("text_encoder_params", UMT5_XXL_PARAMS)
        seconds += 2 * text_params * TEXT_TOKENS * prompts / (CPU_TFLOPS * 1e12)
    return PlacementCost(placement, memory, usable_bytes(budget_gib), seconds, flop_seconds, moved)


CHOICES = {"weight_dtype": ("compute", "float8_e4m3fn"), "kv_cache": ("device", "cpu"),
           "kv_dtype": ("compute", "float8_e4m3fn"), "cfg_branches": ("batched", "split"),
           "text_encoder": ("device", "cpu")}


def choose_placement(cfg: WanConfig, layout: SegmentLayout, height: int, width: int, gpu_gib: float,
                     device: DeviceSpeed | None = None, *, steps: int = 50, guidance: float = 5.0, nbytes: int = 2,
                     fixed: dict | None = None, **memory_kwargs) -> tuple[PlacementCost, list[PlacementCost]]:
    """The placement for a device of `gpu_gib` GiB (less `RESERVED_GIB`) with the least predicted segment time;
    ties go to fewer bit-changing choices, then text encoding on the device (on the CPU it is slower, once per
    prompt: not in the time model), then fewer transferred bytes, then the lower peak. Every combination of
    `CHOICES` is tried with the most resident blocks that fit. `fixed`: choices not to search ({"kv_dtype":
    "compute", "blocks_on_device": 10, ...}). Returns (the pick, every candidate); when nothing fits, the pick is
    the candidate with the lowest peak (its `fits` is False)."""
    fixed = dict(fixed or {})
    device = device or typical_device(gpu_gib)
    unknown = set(fixed) - set(CHOICES) - {"blocks_on_device"}
    if unknown:
        raise ValueError(f"fixed: unknown choices {sorted(unknown)}; expected some of {sorted(CHOICES)}, "
                         "blocks_on_device")
    names = list(CHOICES)
    options = [(fixed[n],) if n in fixed else CHOICES[n] for n in names]
    if guidance == 1.0:
        options[names.index("cfg_branches")] = ("batched",)
    cost = lambda p: placement_cost(cfg, layout, height, width, p, gpu_gib, device, steps=steps,  # noqa: E731
                                    guidance=guidance, nbytes=nbytes, **memory_kwargs)
    candidates = []
    for values in itertools.product(*options):
        base = Placement(**dict(zip(names, values)))
        if "blocks_on_device" in fixed:
            candidates.append(cost(replace(base, blocks_on_device=fixed["blocks_on_device"])))
            continue
        for resident in range(cfg.num_layers, -1, -1):  # the most resident blocks that fit
            candidate = cost(replace(base, blocks_on_device=None if resident == cfg.num_layers else resident))
            if candidate.fits or resident == 0:
                candidates.append(candidate)
                break
    fitting = [c for c in candidates if c.fits]
    if not fitting:
        return min(candidates, key=lambda c: c.peak), candidates
    def preference(c: PlacementCost):
        return round(c.seconds, 6), c.lossy, c.placement.text_encoder == "cpu", c.transfer_bytes, c.peak

    return min(fitting, key=preference), candidates


def describe(placement: Placement, cfg: WanConfig) -> str:
    resident = placement.resident_blocks(cfg)
    weights = ("resident" if resident == cfg.num_layers else
               f"{resident}/{cfg.num_layers} blocks resident, rest streamed")
    parts = [f"weights {weights}" + (" (float8)" if placement.weight_dtype != "compute" else ""),
             f"KV cache on {placement.kv_cache}" + (" (float8)" if placement.kv_dtype != "compute" else ""),
             f"CFG {placement.cfg_branches}"]
    if placement.text_encoder == "cpu":
        parts.append("umT5 on the CPU")
    return ", ".join(parts)


def cli_flags(placement: Placement, cfg: WanConfig) -> str:
    """The `mmpl generate` options that select `placement`."""
    flags = [f"--kv-cache {placement.kv_cache}"]
    if placement.resident_blocks(cfg) < cfg.num_layers:
        flags.append(f"--blocks-on-device {placement.resident_blocks(cfg)}")
    if placement.weight_dtype != "compute":
        flags.append(f"--weight-dtype {placement.weight_dtype}")
    if placement.kv_dtype != "compute":
        flags.append(f"--kv-dtype {placement.kv_dtype}")
    if placement.cfg_branches != "batched":
        flags.append(f"--cfg-branches {placement.cfg_branches}")
    if placement.text_encoder == "cpu":
        flags.append("--text-encoder-on cpu")
    return " ".join(flags)


__all__ = ["CHOICES", "CPU_TFLOPS", "PCIE_GBPS", "RESERVED_GIB", "TYPICAL_DEVICES", "DeviceSpeed", "PlacementCost",
           "choose_placement", "chunk_seconds", "cli_flags", "describe", "placement_cost", "segment_time",
           "typical_device"]
