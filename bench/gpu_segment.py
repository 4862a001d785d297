"""Real-size MMPL on one device: seconds per denoising step of each group, attention backend, peak memory, and a
multi-segment video at reduced steps extrapolated to 50, against the estimator, the FLOP bound and the authors' log.

Random weights of the chosen shape (no download): the cost of a forward does not depend on the weights' values.

    python bench/gpu_segment.py --model 14B --resolution 480 832 --steps 3 --segments 4      # on a GPU
    python bench/gpu_segment.py --model micro --resolution 32 48 --steps 1 --segments 2 \
        --device cpu --dtype float32 --vae-base-dim 8                                          # CPU smoke run, seconds

Prints a Markdown table for docs/benchmarks.md and, with --json, writes the figures.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from mmpl_core.layout import get_layout
from mmpl_core.memory import AUTHORS_H100_SEGMENT_SECONDS, GB, estimate_memory, group_costs, segment_flops
from mmpl_core.model import WAN_CONFIGS, WanDiT
from mmpl_core.model.attention import backend_for
from mmpl_core.pipeline import MMPLPipeline
from mmpl_core.plan import GenerationSettings
from mmpl_core.sampling import SamplerConfig
from mmpl_core.segment import Prompt, SegmentSampler, plan_segment, populate_segment
from mmpl_core.text import HashedTextEncoder
from mmpl_core.vae import WanVAE, build_tiny_vae

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16


def random_model(size: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> WanDiT:
    """A DiT of `size` built on the meta device and filled in place on `device` in `dtype` (no full CPU copy);
    the same statistics as `init_random_weights`."""
    with torch.device("meta"):
        model = WanDiT(WAN_CONFIGS[size])
    model = model.to(dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32)
            if name.endswith("modulation"):
                noise /= math.sqrt(p.shape[-1])
            elif name.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight")):
                noise = 1.0 + 0.1 * noise
            elif p.ndim >= 2:
                noise /= math.sqrt(math.prod(p.shape[1:]))
            else:
                noise *= 0.02
            p.copy_(noise.to(dtype))
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def measure_segment(model, layout, args, device, dtype) -> dict:
    """One segment (plan, then populate) after a warm-up; per group: seconds per forward (denoising steps and the
    t=0 cache pass alike), and the peak memory of the populating run (the largest cache)."""
    cfg = model.config
    text = HashedTextEncoder(dim=cfg.text_dim)
    prompt = Prompt(text.encode("a red circle bounces over a blue floor"), text.encode("blurry, static"))
    sampler = SegmentSampler(model, SamplerConfig(steps=args.steps, guidance=5.0), device=device, dtype=dtype,
                             attention_backend=args.attention)
    shape = (16, args.resolution[0] // 8, args.resolution[1] // 8)
    plan_segment(sampler, layout, prompt, shape, seed=1, segment=0)  # warm-up: kernels, cuBLAS handles, allocator
    _sync(device)
    _peak_reset(device)
    planned = plan_segment(sampler, layout, prompt, shape, seed=0, segment=0)
    _sync(device)
    plan_peak = _peak(device)
    _peak_reset(device)
    populated = populate_segment(sampler, layout, prompt, planned.result, seed=0, segment=0)
    _sync(device)
    groups = {}
    for t in planned.timings + populated.timings:
        if t.denoised:
            groups[t.name] = {"frames": len(t.frames), "s_per_step": t.seconds / t.forwards, "forwards": t.forwards}
    q = torch.zeros(1, 8, cfg.num_heads, cfg.head_dim, device=device, dtype=dtype)
    return {"groups": groups, "plan_peak": plan_peak, "populate_peak": _peak(device),
            "cache_bytes": populated.cache_bytes, "backend": backend_for(q, None, args.attention)}


def measure_video(model, layout, args, device, dtype, per_step: dict) -> dict:
    """A `--segments` video through the pipeline (plan chain with the VAE bridge, populate, decode) at `--steps`,
    and its time extrapolated to 50 steps with the measured seconds per step of each group."""
    cfg = model.config
    vae = build_tiny_vae(args.vae_base_dim, seed=0)
    vae = WanVAE(vae.vae.to(device=device, dtype=dtype))
    pipe = MMPLPipeline(model, vae, layout, HashedTextEncoder(dim=cfg.text_dim), device=device, dtype=dtype)
    settings = GenerationSettings(seed=0, height=args.resolution[0], width=args.resolution[1],
                                  sampler=SamplerConfig(steps=args.steps, guidance=5.0), fps=16)
    plan = pipe.new_plan(["a red circle bounces over a blue floor"], args.segments, settings)
    seconds = {}
    start = time.perf_counter()
    plan = pipe.plan(plan)
    _sync(device)
    seconds["plan"] = time.perf_counter() - start
    start = time.perf_counter()
    plan = pipe.populate(plan)
    _sync(device)
    seconds["populate"] = time.perf_counter() - start
    start = time.perf_counter()
    frames = sum(part.shape[1] for part in pipe.decode_stream(plan))
    seconds["decode"] = time.perf_counter() - start
    total = sum(seconds.values())
    # every group is denoised once per segment, except the first two frames of segments 2.. (bridge latents)
    denoised = {name: args.segments for name in per_step}
    first = layout.groups[0].name
    if first in denoised and layout.context_frames:
        denoised[first] = 1
    extra = sum(per_step[name]["s_per_step"] * (50 - args.steps) * n for name, n in denoised.items())
    return {"seconds": seconds, "total_s": total, "frames": frames, "total_50_steps_s": total + extra}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="14B", choices=sorted(WAN_CONFIGS), help="DiT shape (random weights)")
    p.add_argument("--resolution", type=int, nargs=2, default=(480, 832), metavar=("HEIGHT", "WIDTH"))
    p.add_argument("--steps", type=int, default=3, help="reduced denoising steps per chunk (extrapolated to 50)")
    p.add_argument("--segments", type=int, default=4)
    p.add_argument("--layout", default="wan-t2v")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--attention", default="auto", choices=("auto", "sdpa", "flash_attn"))
    p.add_argument("--vae-base-dim", type=int, default=96, help="VAE width (96 = the real Wan2.1 VAE)")
    p.add_argument("--tflops", type=float, help="peak dense TFLOP/s for the FLOP bound (default: by GPU name)")
    p.add_argument("--skip-video", action="store_true", help="only the one-segment group timings")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    layout, cfg = get_layout(args.layout), WAN_CONFIGS[args.model]
    height, width = args.resolution
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    tflops = args.tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    start = time.perf_counter()
    model = random_model(args.model, device, dtype)
    build_s = time.perf_counter() - start
    seg = measure_segment(model, layout, args, device, dtype)
    video = None if args.skip_video else measure_video(model, layout, args, device, dtype, seg["groups"])
    est = estimate_memory(cfg, layout, height, width, role="segment", nbytes=torch.finfo(dtype).bits // 8)
    predicted_dit = est.weights + est.kv_cache + est.text_kv + est.activations
    costs = {c.name: c for c in group_costs(cfg, layout, height, width)}

    print(f"# {args.model} at {height}x{width}, {args.dtype}, layout {layout.name}, on {name} "
          f"(attention: {seg['backend']}; model built in {build_s:.1f} s)\n")
    print("| group | frames | query/key tokens | s per step | FLOP bound s/step | of peak |")
    print("|---|---|---|---|---|---|")
    for group, g in seg["groups"].items():
        c = costs[group]
        bound = c.flops_per_step / (tflops * 1e12) if tflops else None
        bound_text, share = (f"{bound:.3f}", f"{bound / g['s_per_step']:.0%}") if bound else ("n/a", "n/a")
        print(f"| {group} | {g['frames']} | {c.q_tokens}/{c.k_tokens} | {g['s_per_step']:.3f} | {bound_text} | {share} |")
    measured = seg["populate_peak"]
    gb = lambda n: f"{n / GB:.4g} GB"  # noqa: E731
    print(f"\npeak memory (populate, DiT only): {'n/a (CPU)' if measured is None else gb(measured)}; predicted "
          f"{gb(predicted_dit)} (weights {gb(est.weights)}, KV cache {gb(est.kv_cache)}, allocated "
          f"{gb(seg['cache_bytes'])}; text K/V {gb(est.text_kv)}, activations {gb(est.activations)})")
    seg_50 = sum(g["s_per_step"] * 50 for g in seg["groups"].values())
    bound_50 = segment_flops(cfg, layout, height, width, 50) / (tflops * 1e12) if tflops else None
    print(f"one segment at 50 steps (denoising only, from the step times): {seg_50:.0f} s; FLOP bound "
          f"{'n/a' if bound_50 is None else f'{bound_50:.0f} s'}; "
          f"authors' log (14B, H100): {AUTHORS_H100_SEGMENT_SECONDS} s")
    if video is not None:
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in video["seconds"].items())
        print(f"{args.segments}-segment video at {args.steps} steps: {video['total_s']:.1f} s ({parts}; "
              f"{video['frames']} frames); extrapolated to 50 steps: {video['total_50_steps_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "model": args.model, "resolution": [height, width], "dtype": args.dtype, "device": name,
            "attention": seg["backend"], "steps": args.steps, "groups": seg["groups"], "plan_peak": seg["plan_peak"],
            "populate_peak": measured, "predicted_dit_bytes": predicted_dit, "kv_cache_bytes": seg["cache_bytes"],
            "segment_50_steps_s": seg_50, "flop_bound_50_steps_s": bound_50, "video": video}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
