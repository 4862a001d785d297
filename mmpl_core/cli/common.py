"""Shared pieces of the `mmpl` commands: model/VAE loading, sampler arguments, images."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


class CLIError(SystemExit):
    """A user error: printed as `mmpl: message`, exit code 2, no traceback."""

    def __init__(self, message: str):
        super().__init__(f"mmpl: {message}")


RANDOM = "random:"
DEMO_MODELS = {"demo": "mmpl", "demo:ar": "ar"}  # --model value → the demo bundle's entry
# Defaults when no demo bundle says otherwise (the demo model's demo.json carries its own).
FALLBACK = {"steps": 20, "shift": 5.0, "cfg": 5.0, "size": (64, 64), "layout": "mmpl-t2v-21"}


def add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solver", choices=("unipc", "euler"), default="unipc", help="flow-matching solver")
    p.add_argument("--steps", type=int, help="denoising steps per chunk (official: 50; default: the model's)")
    p.add_argument("--shift", type=float, help="timestep shift (official: 5)")
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale (official: 5)")
    p.add_argument("--seed", type=int, default=0)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="demo",
                   help="'demo' (the embedded MMPL demo model), 'demo:ar' (its autoregressive baseline), a checkpoint "
                        "file/folder, or random:SIZE for seeded random weights (random:tiny, random:demo, "
                        "random:micro, random:1.3B, random:14B)")
    p.add_argument("--model-seed", type=int, default=0, help="seed of random weights (--model random:SIZE)")
    p.add_argument("--ema", action="store_true", help="use 'generator_ema' of an official MMPL .pt checkpoint")
    p.add_argument("--vae", help="a Wan2.1 VAE (diffusers folder or single file); default: a tiny random VAE")
    p.add_argument("--vae-base-dim", type=int, default=8, help="base width of the tiny random VAE")
    p.add_argument("--layout", help="wan-t2v, wan-i2v, ablations, mmpl-t2v-N, mmpl-i2v-N, ar-N (default: the model's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")


def load_dit(args: argparse.Namespace):
    from ..checkpoints import CheckpointError, load_wan_model
    from ..model import WAN_CONFIGS, build_random_model

    dtype = getattr(torch, args.dtype)
    if args.model.startswith(RANDOM):
        size = args.model[len(RANDOM):]
        if size not in WAN_CONFIGS:
            raise CLIError(f"--model {args.model!r}: unknown size; expected random:SIZE with SIZE in {list(WAN_CONFIGS)}")
        return build_random_model(WAN_CONFIGS[size], seed=args.model_seed, dtype=dtype).to(args.device)
    path = Path(args.model)
    if not path.exists():
        raise CLIError(f"--model {args.model!r} is neither 'demo', random:SIZE nor an existing path")
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


def _fill_defaults(args: argparse.Namespace, defaults: dict) -> None:
    """Arguments the user left out take the model's defaults."""
    for name, value in defaults.items():
        if getattr(args, name, None) is None and hasattr(args, name):
            setattr(args, name, value)


def build_pipeline(args: argparse.Namespace):
    """The pipeline for the model arguments; missing sampler/size/layout arguments get the model's defaults."""
    from ..layout import LayoutError, get_layout
    from ..pipeline import MMPLPipeline
    from ..text import HashedTextEncoder

    dtype = getattr(torch, args.dtype)
    if args.model in DEMO_MODELS:
        from .. import demo

        if not demo.available():
            raise CLIError(f"the embedded demo model is missing from {demo.DEMO_DIR}; pass --model PATH or random:SIZE")
        pipe, bundle = demo.load_demo_pipeline(DEMO_MODELS[args.model], device=args.device, dtype=dtype)
        _fill_defaults(args, {"steps": bundle.steps, "shift": bundle.shift, "cfg": bundle.guidance,
                              "size": (bundle.size, bundle.size), "layout": bundle.layout})
        if args.vae is not None or get_layout(args.layout) != pipe.layout:
            raise CLIError("--model demo comes with its own VAE and layout; leave out --vae/--layout")
        return pipe
    _fill_defaults(args, FALLBACK)
    try:
        layout = get_layout(args.layout)
    except LayoutError as err:
        raise CLIError(f"--layout: {err}") from err
    dit = load_dit(args)
    return MMPLPipeline(
        dit, load_vae(args), layout, HashedTextEncoder(dim=dit.text_embedding[0].weight.shape[1]),
        device=args.device, dtype=dtype,
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
