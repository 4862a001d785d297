"""`mmpl segment`: plan and populate one segment, print the group order and timings per group."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import add_model_args, add_sampler_args, build_pipeline, sampler_config
from .placement_args import add_kv_dtype_arg


def register(sub) -> None:
    p = sub.add_parser("segment", help="plan and populate one segment; print the group order and timings")
    add_model_args(p)
    add_sampler_args(p)
    p.add_argument("--prompt", default="a red circle and a yellow square bounce over a blue gradient")
    p.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="default: the model's")
    p.add_argument("--out", type=Path, help="write the decoded segment as an mp4")
    p.add_argument("--fps", type=int, default=16)
    add_kv_dtype_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..plan import GenerationSettings
    from ..video_io import to_uint8_frames, write_mp4

    pipe = build_pipeline(args)
    settings = GenerationSettings(seed=args.seed, height=args.size[0], width=args.size[1],
                                  sampler=sampler_config(args), fps=args.fps, kv_dtype=args.kv_dtype)
    layout = pipe.layout
    print(f"layout {layout.name}: {layout.describe()}")
    start = time.perf_counter()
    with tqdm(total=settings.sampler.steps * len(layout.groups), desc="denoising", unit="step", file=sys.stderr) as bar:
        result = pipe.generate_segment(args.prompt, settings, on_step=lambda: bar.update(1))
    wall = time.perf_counter() - start
    print(f"{'group':<9} {'frames':<28} {'forwards':>8} {'seconds':>8}")
    for t in result.timings:
        kind = "" if t.denoised else " (t=0 context pass)"
        print(f"{t.name:<9} {str(list(t.frames)):<28} {t.forwards:>8} {t.seconds:>8.3f}{kind}")
    print(f"{'decode':<9} {'':<28} {'':>8} {result.decode_seconds:>8.3f}")
    print(f"segment: {result.video.shape[1]} frames of {args.size[0]}x{args.size[1]} in {wall:.2f} s")
    if args.out:
        write_mp4(to_uint8_frames(result.video), args.out, fps=args.fps)
        print(f"wrote {args.out}")
    return 0
