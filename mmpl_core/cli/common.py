"""Shared pieces of the `mmpl` commands: model/VAE loading, sampler arguments, images."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


class CLIError(SystemExit):
    """A user error: printed as `mmpl: message`, exit code 2, no traceback."""

    def __init__(self, message: str):
        super().__init__(f"mmpl: {message}")


def add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solver", choices=("unipc", "euler"), default="unipc", help="flow-matching solver")
    p.add_argument("--steps", type=int, default=20, help="denoising steps per chunk (official: 50)")
    p.add_argument("--shift", type=float, default=5.0, help="timestep shift (official: 5)")
    p.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance scale (official: 5)")
    p.add_argument("--seed", type=int, default=0)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny",
                   help="a size for seeded random weights (tiny, demo, micro, 1.3B, 14B) or a checkpoint file/folder")
    p.add_argument("--model-seed", type=int, default=0, help="seed of random weights (--model SIZE)")
    p.add_argument("--ema", action="store_true", help="use 'generator_ema' of an official MMPL .pt checkpoint")
    p.add_argument("--vae", help="a Wan2.1 VAE (diffusers folder or single file); default: a tiny random VAE")
    p.add_argument("--vae-base-dim", type=int, default=8, help="base width of the tiny random VAE")
    p.add_argument("--layout", default="mmpl-t2v-21", help="wan-t2v, wan-i2v, ablations, or mmpl-t2v-N / mmpl-i2v-N")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")


def load_dit(args: argparse.Namespace):
    from ..checkpoints import CheckpointError, load_wan_model
    from ..model import WAN_CONFIGS, build_random_model

    dtype = getattr(torch, args.dtype)
    if args.model in WAN_CONFIGS:
        return build_random_model(WAN_CONFIGS[args.model], seed=args.model_seed, dtype=dtype).to(args.device)
    path = Path(args.model)
    if not path.exists():
        raise CLIError(f"--model {args.model!r} is neither a model size ({', '.join(WAN_CONFIGS)}) nor an existing path")
    try:
        return load_wan_model(path, ema=args.ema, dtype=dtype, device=args.device).eval()
    except CheckpointError as err:
        raise CLIError(f"--model: {err}") from err


def load_vae(args: argparse.Namespace):
    from ..vae import build_tiny_vae, load_wan_vae

    if args.vae is None:
        return build_tiny_vae(args.vae_base_dim, seed=args.model_seed)
    try:
        return load_wan_vae(args.vae, device=args.device)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(f"--vae: {err}") from err


def build_pipeline(args: argparse.Namespace):
    from ..layout import LayoutError, get_layout
    from ..pipeline import MMPLPipeline
    from ..text import HashedTextEncoder

    try:
        layout = get_layout(args.layout)
    except LayoutError as err:
        raise CLIError(f"--layout: {err}") from err
    dit = load_dit(args)
    return MMPLPipeline(
        dit, load_vae(args), layout, HashedTextEncoder(dim=dit.text_embedding[0].weight.shape[1]),
        device=args.device, dtype=getattr(torch, args.dtype),
    )


def sampler_config(args: argparse.Namespace):
    from ..sampling import SamplerConfig

    try:
        return SamplerConfig(solver=args.solver, steps=args.steps, shift=args.shift, guidance=args.cfg)
    except ValueError as err:
        raise CLIError(str(err)) from err


def read_image(path: str | Path, height: int, width: int) -> torch.Tensor:
    """An image file → [3, height, width] in [-1, 1], resized to cover the target and centre-cropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path).convert("RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise CLIError(f"cannot read image {path}: {err}") from err
    scale = max(height / img.height, width / img.width)
    img = img.resize((max(width, round(img.width * scale)), max(height, round(img.height * scale))), Image.BICUBIC)
    left, top = (img.width - width) // 2, (img.height - height) // 2
    img = img.crop((left, top, left + width, top + height))
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(height, width, 3)
    return data.permute(2, 0, 1).float() / 127.5 - 1.0
