"""What 8-bit K/V storage costs: the embedded demo model with a float8 (e4m3) KV cache against the same runs with the
cache in the compute dtype (float32 for the demo on the CPU; bf16 for Wan on a GPU), on the quality benchmark's
prompts, seeds and metrics.

    PYTHONPATH=. .venv/bin/python bench/kv_fp8.py [--prompts 3] [--segments 12] [--steps N]

For each prompt both videos are generated with identical settings except `kv_dtype`, then scored with
`metrics.evaluate_video` (colour drift ΔE and histogram EMD against the first segment, sharpness, seam score) and
compared with each other: relative L2 difference of the latents and PSNR of the pixels, per segment. Prints a Markdown
table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from mmpl_core.data.synthetic import scene_prompt
from mmpl_core.metrics.bins import TimeBins
from mmpl_core.metrics.evaluate import evaluate_video
from mmpl_core.metrics.protocol import GENERATORS, BenchConfig, VideoSource
from mmpl_core.metrics.report import summarise
from mmpl_core.video_io import to_uint8_frames

KV_DTYPES = ("compute", "float8_e4m3fn")
SUMMARY = (("colour drift ΔE, last segment", "delta_e_last"), ("colour drift ΔE, mean", "delta_e_avg"),
           ("histogram EMD, last segment", "hist_emd_last"), ("sharpness vs segment 1, last", "sharpness_rel_last"),
           ("seam score (join / within)", "seam_ratio"), ("motion, last segment", "motion_last"))


def generate(source: VideoSource, index: int, kv_dtype: str) -> tuple[np.ndarray, torch.Tensor, float]:
    """(uint8 frames [T, H, W, 3], latents [S, C, N, h, w], seconds) of prompt `index` with `kv_dtype`."""
    generator = GENERATORS["mmpl"]
    pipe = source.pipeline(generator)
    settings = replace(source.settings(generator, index), kv_dtype=kv_dtype)
    start = time.perf_counter()
    plan = pipe.new_plan([scene_prompt(source.config.scenes()[index])], source.config.segments, settings)
    plan = pipe.populate(pipe.plan(plan))
    frames = np.concatenate([to_uint8_frames(part) for part in pipe.decode_stream(plan)])
    latents = torch.stack([seg.latents.latents for seg in plan.segments])
    return frames, latents, time.perf_counter() - start


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=3)
    p.add_argument("--segments", type=int, default=12)
    p.add_argument("--steps", type=int, help="denoising steps (default: the demo model's)")
    args = p.parse_args(argv)
    config = BenchConfig(prompts=args.prompts, segments=args.segments, steps=args.steps, generators=("mmpl",))
    source = VideoSource(config, cache_dir=None)
    bins = TimeBins.segments(source.layout(GENERATORS["mmpl"]), config.segments, fps=16)
    scored = {kv: [] for kv in KV_DTYPES}
    latent_diff, pixel_psnr, seconds = [], [], {kv: 0.0 for kv in KV_DTYPES}
    for index in range(config.prompts):
        videos = {}
        for kv in KV_DTYPES:
            frames, latents, took = generate(source, index, kv)
            videos[kv], seconds[kv] = (frames, latents), seconds[kv] + took
            scored[kv].append(evaluate_video(frames, bins, config.scenes()[index]).to_json())
        (f16, l16), (f8, l8) = videos["compute"], videos["float8_e4m3fn"]
        latent_diff.append([float((a - b).norm() / a.norm()) for a, b in zip(l16, l8)])
        pixel_psnr.append([psnr(f16[start:stop], f8[start:stop]) for start, stop in bins.bounds])
    summaries = {kv: summarise(scored[kv])["summary"] for kv in KV_DTYPES}
    bundle = source.bundle()
    print(f"# float8 K/V on the demo model ({bundle.layout}, {bundle.size}x{bundle.size}, "
          f"{config.steps or bundle.steps} steps, CFG {bundle.guidance:g}): {config.prompts} prompts x "
          f"{config.segments} segments, fingerprint {source.pipeline(GENERATORS['mmpl']).fingerprint}\n")
    compute = str(source.pipeline(GENERATORS["mmpl"]).dtype).removeprefix("torch.")
    print(f"| metric | K/V in the compute dtype ({compute}) | float8 K/V |")
    print("|---|---|---|")
    for label, key in SUMMARY:
        print(f"| {label} | {summaries['compute'][key]:.3f} | {summaries['float8_e4m3fn'][key]:.3f} |")
    per_segment_latent = np.mean(latent_diff, axis=0)
    per_segment_psnr = np.mean(pixel_psnr, axis=0)
    print(f"| seconds per video | {seconds['compute'] / config.prompts:.1f} | "
          f"{seconds['float8_e4m3fn'] / config.prompts:.1f} |")
    print("\nfloat8 against 16-bit, mean over prompts, by segment:\n")
    print("| segment | " + " | ".join(str(k + 1) for k in range(config.segments)) + " |")
    print("|---|" + "---|" * config.segments)
    print("| latent rel. L2 difference | " + " | ".join(f"{v:.3f}" for v in per_segment_latent) + " |")
    print("| pixel PSNR (dB) | " + " | ".join(f"{v:.1f}" for v in per_segment_psnr) + " |")
    print(json.dumps({
        "prompts": config.prompts, "segments": config.segments, "steps": config.steps or bundle.steps,
        "summary": {kv: {key: round(summaries[kv][key], 4) for _, key in SUMMARY} for kv in KV_DTYPES},
        "latent_rel_diff_first": round(float(per_segment_latent[0]), 4),
        "latent_rel_diff_last": round(float(per_segment_latent[-1]), 4),
        "psnr_first_db": round(float(per_segment_psnr[0]), 2), "psnr_last_db": round(float(per_segment_psnr[-1]), 2),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
