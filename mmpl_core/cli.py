"""`mmpl` command line: thin front end over the engine (arguments in, a call into the core, progress out)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from . import __version__


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solver", choices=("unipc", "euler"), default="unipc", help="flow-matching solver")
    p.add_argument("--steps", type=int, default=20, help="denoising steps per chunk (official: 50)")
    p.add_argument("--shift", type=float, default=5.0, help="timestep shift (official: 5)")
    p.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance scale (official: 5)")
    p.add_argument("--seed", type=int, default=0)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny",
                   help="a model size for random weights (tiny, demo, micro, 1.3B, 14B) or a checkpoint file/folder")
    p.add_argument("--ema", action="store_true", help="use 'generator_ema' of an official MMPL .pt checkpoint")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmpl", description="MMPL long-video generation over Wan2.1")
    parser.add_argument("--version", action="version", version=f"mmpl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="plan and populate one segment, print the group order and timings")
    _add_model_args(seg)
    _add_sampler_args(seg)
    seg.add_argument("--prompt", default="a red circle and a yellow square bounce over a blue gradient")
    seg.add_argument("--layout", default="mmpl-t2v-21", help="wan-t2v, wan-i2v, ablations, or mmpl-t2v-N")
    seg.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("HEIGHT", "WIDTH"))
    seg.add_argument("--vae-base-dim", type=int, default=8, help="base width of the tiny random VAE")
    seg.add_argument("--out", type=Path, help="write the decoded segment as an mp4")
    seg.add_argument("--fps", type=int, default=16)
    seg.set_defaults(func=cmd_segment)
    return parser


def load_dit(model: str, *, ema: bool, device: str, dtype: torch.dtype, seed: int):
    from .checkpoints import load_wan_model
    from .model import WAN_CONFIGS, build_random_model

    if model in WAN_CONFIGS:
        return build_random_model(WAN_CONFIGS[model], seed=seed, dtype=dtype).to(device)
    path = Path(model)
    if not path.exists():
        raise SystemExit(f"mmpl: --model {model!r} is neither a model size ({', '.join(WAN_CONFIGS)}) nor an existing path")
    return load_wan_model(path, ema=ema, dtype=dtype, device=device).eval()


def cmd_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .layout import get_layout
    from .pipeline import MMPLPipeline
    from .sampling import SamplerConfig
    from .segment import SegmentSampler
    from .text import HashedTextEncoder
    from .vae import build_tiny_vae
    from .video_io import to_uint8_frames, write_mp4

    dtype = getattr(torch, args.dtype)
    layout = get_layout(args.layout)
    sampler_cfg = SamplerConfig(solver=args.solver, steps=args.steps, shift=args.shift, guidance=args.cfg)
    dit = load_dit(args.model, ema=args.ema, device=args.device, dtype=dtype, seed=args.seed)
    text_dim = dit.text_embedding[0].weight.shape[1]
    pipe = MMPLPipeline(
        sampler=SegmentSampler(dit, sampler_cfg, device=args.device, dtype=dtype),
        vae=build_tiny_vae(args.vae_base_dim, seed=args.seed),
        layout=layout,
        text_encoder=HashedTextEncoder(dim=text_dim),
    )
    total = sampler_cfg.steps * len(layout.groups)  # from noise, every group of a first segment is denoised
    print(f"layout {layout.name}: {layout.describe()}")
    start = time.perf_counter()
    with tqdm(total=total, desc="denoising steps", unit="step", file=sys.stderr) as bar:
        result = pipe.generate_segment(
            args.prompt, seed=args.seed, height=args.size[0], width=args.size[1], on_step=lambda: bar.update(1)
        )
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
