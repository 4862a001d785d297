"""MMPL under a device memory budget: peak memory against the estimate, and seconds per step against the prediction.

A DiT of the chosen shape with random weights built on the device (no download) runs 2 denoising steps of each
group of one segment (plan chain: initial, plan; populating: head, tail) at 480×832, once with everything on the
device (unconstrained) and once per budget under `torch.cuda.set_per_process_memory_fraction`, in the placement
`placement.choose_placement` picks for that budget among the exact ones (resident or streamed blocks, KV cache on
the device or in CPU memory; 16-bit, CFG batched). umT5 and the VAE do not run (the budget is the DiT's).

    python bench/gpu_memory.py                                     # 14B, budgets 24 GiB and unconstrained (< 8 min)
    python bench/gpu_memory.py --device cpu --model micro --resolution 32 48 --steps 1 --dtype float32 \\
        --kv-cache cpu --blocks-on-device 0                        # CPU smoke run: the same code paths, seconds

Prints Markdown tables (peak memory = `max_memory_allocated`, attention backend, seconds per step of each group
against the predicted time and the FLOP bound) and, last, one JSON line; --json writes the figures to a file.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_segment import PEAK_TFLOPS, random_model  # noqa: E402

from mmpl_core.layout import get_layout  # noqa: E402
from mmpl_core.memory import GIB, Placement, estimate_memory, tokens_per_frame  # noqa: E402
from mmpl_core.model import WAN_CONFIGS  # noqa: E402
from mmpl_core.model.attention import backend_for  # noqa: E402
from mmpl_core.model.streaming import stream_blocks  # noqa: E402
from mmpl_core.placement import (  # noqa: E402
    PCIE_GBPS, DeviceSpeed, choose_placement, chunk_seconds, describe, typical_device,
)
from mmpl_core.sampling import SamplerConfig  # noqa: E402
from mmpl_core.segment import Prompt, SegmentSampler, plan_segment, populate_segment  # noqa: E402
from mmpl_core.text import HashedTextEncoder  # noqa: E402

EXACT = {"weight_dtype": "compute", "kv_dtype": "compute", "cfg_branches": "batched", "text_encoder": "device"}
NO_CODECS = {"text_encoder_params": 0, "vae_params": 0}  # the bench runs neither umT5 nor the VAE
GUIDANCE = 5.0


def device_speed(args, device: torch.device) -> DeviceSpeed:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    tflops = args.tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    base = typical_device(80 if device.type == "cuda" else 12)
    return replace(base, name=name, tflops=tflops or base.tflops, pcie_gbps=args.pcie_gbps)


def budget_placement(args, cfg, layout, budget_gib, speed, nbytes) -> Placement:
    fixed = dict(EXACT)
    if args.kv_cache != "auto":
        fixed["kv_cache"] = args.kv_cache
    if args.blocks_on_device is not None:
        fixed["blocks_on_device"] = args.blocks_on_device
    height, width = args.resolution
    best, _ = choose_placement(cfg, layout, height, width, budget_gib, speed, steps=args.steps, guidance=GUIDANCE,
                               nbytes=nbytes, fixed=fixed, **NO_CODECS)
    return best.placement


def run_segment(model, layout, args, device, dtype, placement: Placement) -> dict:
    """Plan then populate one segment at `--steps`; per denoised group seconds per forward, and the peak memory."""
    cfg = model.config
    text = HashedTextEncoder(dim=cfg.text_dim)
    prompt = Prompt(text.encode("a red circle bounces over a blue floor"), text.encode("blurry, static"))
    sampler = SegmentSampler(model, SamplerConfig(steps=args.steps, guidance=GUIDANCE), device=device, dtype=dtype,
                             attention_backend=args.attention, kv_cache=placement.kv_cache)
    shape = (16, args.resolution[0] // 8, args.resolution[1] // 8)
    cuda = device.type == "cuda"
    try:
        plan_segment(sampler, layout, prompt, shape, seed=1, segment=0)  # warm-up: kernels, handles, allocator
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        planned = plan_segment(sampler, layout, prompt, shape, seed=0, segment=0)
        populated = populate_segment(sampler, layout, prompt, planned.result, seed=0, segment=0)
        if cuda:
            torch.cuda.synchronize(device)
    except torch.cuda.OutOfMemoryError as err:
        return {"error": f"out of memory: {str(err).splitlines()[0]}"}
    groups = {t.name: {"frames": len(t.frames), "s_per_forward": t.seconds / t.forwards, "forwards": t.forwards}
              for t in planned.timings + populated.timings if t.denoised}
    return {"groups": groups, "peak": torch.cuda.max_memory_allocated(device) if cuda else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="14B", choices=sorted(WAN_CONFIGS), help="DiT shape (random weights)")
    p.add_argument("--resolution", type=int, nargs=2, default=(480, 832), metavar=("HEIGHT", "WIDTH"))
    p.add_argument("--steps", type=int, default=2, help="denoising steps of each group")
    p.add_argument("--budgets", type=float, nargs="+", default=(24.0,), help="GiB budgets besides unconstrained")
    p.add_argument("--layout", default="wan-t2v")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--attention", default="auto", choices=("auto", "sdpa", "flash_attn"))
    p.add_argument("--tflops", type=float, help="peak dense TFLOP/s (default: by GPU name; H200 989)")
    p.add_argument("--pcie-gbps", type=float, default=PCIE_GBPS, help="host-to-device GB/s of the prediction")
    p.add_argument("--kv-cache", choices=("auto", "device", "cpu"), default="auto", help="force, under a budget")
    p.add_argument("--blocks-on-device", type=int, help="force, under a budget")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    layout, cfg = get_layout(args.layout), WAN_CONFIGS[args.model]
    height, width = args.resolution
    nbytes = torch.finfo(dtype).bits // 8
    speed = device_speed(args, device)
    start = time.perf_counter()
    model = random_model(args.model, device, dtype)
    build_s = time.perf_counter() - start
    q = torch.zeros(1, 8, cfg.num_heads, cfg.head_dim, device=device, dtype=dtype)
    backend = backend_for(q, None, args.attention)
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    runs = []
    for budget in (None, *args.budgets):
        placement = Placement() if budget is None else budget_placement(args, cfg, layout, budget, speed, nbytes)
        stream_blocks(model, device, placement.resident_blocks(cfg))
        if total is not None:
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(1.0 if budget is None else min(1.0, budget * GIB / total))
        est = estimate_memory(cfg, layout, height, width, role="segment", guidance=GUIDANCE, nbytes=nbytes,
                              placement=placement, **NO_CODECS)
        result = run_segment(model, layout, args, device, dtype, placement)
        runs.append({"budget_gib": budget, "placement": asdict(placement), "describe": describe(placement, cfg),
                     "predicted_sampling_bytes": est.sampling, **result})
    if total is not None:
        torch.cuda.set_per_process_memory_fraction(1.0)

    print(f"# {args.model} at {height}x{width}, {args.dtype}, layout {layout.name}, {args.steps} steps per group, on "
          f"{speed.name} (attention: {backend}; model built in {build_s:.1f} s); prediction at {speed.tflops:g} "
          f"TFLOP/s and {speed.pcie_gbps:g} GB/s host-to-device\n")
    print("| budget | placement | peak allocated | predicted (sampling) |")
    print("|---|---|---|---|")
    for run in runs:
        peak = run.get("peak")
        measured = run.get("error") or ("n/a (CPU)" if peak is None else f"{peak / GIB:.4g} GiB")
        budget = "unconstrained" if run["budget_gib"] is None else f"{run['budget_gib']:g} GiB"
        print(f"| {budget} | {run['describe']} | {measured} | {run['predicted_sampling_bytes'] / GIB:.4g} GiB |")
    print("\n| group | budget | s per step | predicted s/step | FLOP bound s/step |")
    print("|---|---|---|---|---|")
    tpf = tokens_per_frame(cfg, height, width)
    for run in runs:
        placement = Placement(**run["placement"])
        budget = "unconstrained" if run["budget_gib"] is None else f"{run['budget_gib']:g} GiB"
        for name, g in run.get("groups", {}).items():
            group = next(grp for grp in layout.groups if grp.name == name)
            predicted, bound, _ = chunk_seconds(cfg, group, tpf, placement, speed, guidance=GUIDANCE, nbytes=nbytes)
            g.update(predicted_s=predicted, flop_bound_s=bound)
            print(f"| {name} | {budget} | {g['s_per_forward']:.4g} | {predicted:.4g} | {bound:.4g} |")
    summary = {"model": args.model, "resolution": [height, width], "device": speed.name, "attention": backend,
               "runs": runs}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    print(json.dumps({"attention": backend, "device": speed.name,
                      "peaks_gib": [None if r.get("peak") is None else round(r["peak"] / GIB, 3) for r in runs],
                      "predicted_gib": [round(r["predicted_sampling_bytes"] / GIB, 3) for r in runs],
                      "predicted_bytes": [r["predicted_sampling_bytes"] for r in runs],
                      "errors": [r.get("error") for r in runs]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
