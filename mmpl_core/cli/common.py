"""Shared pieces of the `mmpl` commands: model/VAE loading, sampler arguments, images."""
from __future__ import annotations

import argparse
import sys
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
# The authors' settings (official scripts and configs): the defaults with --wan, or any model with --preset official.
OFFICIAL = {"solver": "unipc", "steps": 50, "shift": 5.0, "cfg": 5.0, "size": (480, 832), "fps": 16,
            "layout": "wan-t2v", "negative_prompt": None}  # None: Wan's default negative prompt
OFFICIAL_SAMPLER = ("solver", "steps", "shift", "cfg")
OFFLOADABLE = ("text", "vae")


def add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solver", choices=("unipc", "euler"), help="flow-matching solver (official: unipc)")
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
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="compute dtype (default: bfloat16 with --wan, else float32)")
    add_wan_args(p)
    from .placement_args import add_placement_args

    add_placement_args(p)


def add_wan_args(p: argparse.ArgumentParser) -> None:
    """Real Wan2.1 weights: a model folder (diffusers or original layout) and an MMPL checkpoint."""
    p.add_argument("--wan", metavar="DIR",
                   help="a Wan2.1-T2V model folder (diffusers layout: model_index.json, transformer/, vae/, "
                        "text_encoder/, tokenizer/; or the original layout: diffusion_pytorch_model*.safetensors, "
                        "Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth, google/umt5-xxl/): its umT5 text encoder, "
                        "VAE and (without --checkpoint) DiT")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="with --wan: the MMPL checkpoint that replaces the DiT weights (t2v_14B_8k.pt, "
                        "i2v_14B_6k.pt with --layout wan-i2v; --ema for generator_ema)")
    p.add_argument("--preset", choices=("official",),
                   help="the authors' settings (UniPC, 50 steps, shift 5, CFG 5, 480x832, 16 fps, wan-t2v, Wan's "
                        "negative prompt) for the options left out; printed at start. The default with --wan")
    p.add_argument("--negative-prompt", help="the CFG negative prompt (default: Wan2.1's)")
    p.add_argument("--offload", default="text",
                   help="with --wan: parts kept in CPU memory and moved to the device only while used: 'text' "
                        "(umT5, the default), 'vae', 'text,vae' or 'none'")


def _dit_config(args: argparse.Namespace):
    """The `WanConfig` of --model random:SIZE or a checkpoint file, without reading weights."""
    from ..checkpoints import CheckpointError, read_config
    from ..model import WAN_CONFIGS

    if args.model.startswith(RANDOM):
        size = args.model[len(RANDOM):]
        if size not in WAN_CONFIGS:
            raise CLIError(f"--model {args.model!r}: unknown size; expected random:SIZE with SIZE in {list(WAN_CONFIGS)}")
        return WAN_CONFIGS[size]
    if not Path(args.model).exists():
        raise CLIError(f"--model {args.model!r} is neither 'demo', random:SIZE nor an existing path")
    try:
        return read_config(args.model, ema=args.ema)
    except CheckpointError as err:
        raise CLIError(f"--model: {err}") from err


def load_dit(args: argparse.Namespace, device: str):
    from ..checkpoints import CheckpointError, load_wan_model
    from ..model import build_random_model

    dtype = getattr(torch, args.dtype)
    cfg = _dit_config(args)
    if args.model.startswith(RANDOM):
        return build_random_model(cfg, seed=args.model_seed, dtype=dtype).to(device)
    try:
        return load_wan_model(args.model, ema=args.ema, dtype=dtype, device=device).eval()
    except CheckpointError as err:
        raise CLIError(f"--model: {err}") from err


def _given(args: argparse.Namespace, defaults: dict) -> dict:
    """`defaults` overridden by the arguments the command has and the user (or a preset) set."""
    return {**defaults, **{k: v for k, v in vars(args).items() if v is not None}}


# The text encoder and VAE of the paths without --wan: a weight-free hashed encoder and a tiny VAE or latent codec.
SMALL_CODECS = {"text_encoder_params": 0, "vae_params": 0}


def _placement(args: argparse.Namespace, cfg, layout, defaults: dict, codecs: dict):
    """The device placement for the arguments (see `placement_args`); codecs: text encoder and VAE sizes."""
    from .placement_args import resolve_placement

    nbytes = {"float32": 4, "bfloat16": 2, "float16": 2}[args.dtype]
    plan_defaults = {"size": defaults["size"], "steps": defaults["steps"], "cfg": defaults["cfg"],
                     "kv_dtype": "compute", "cfg_branches": "batched"}
    try:
        return resolve_placement(args, cfg, layout, nbytes=nbytes, defaults=plan_defaults,
                                 offload=parse_offload(getattr(args, "offload", "text")), **codecs)
    except ValueError as err:
        raise CLIError(str(err)) from err


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

    if getattr(args, "wan", None) is not None:
        return build_wan_pipeline(args)
    if getattr(args, "checkpoint", None) is not None:
        raise CLIError("--checkpoint goes with --wan DIR; without a Wan folder pass the DiT checkpoint as --model FILE")
    official = getattr(args, "preset", None) == "official"
    if args.dtype is None:
        args.dtype = "float32"
    dtype = getattr(torch, args.dtype)
    if args.model in DEMO_MODELS:
        from .. import demo

        if not demo.available():
            raise CLIError(f"the embedded demo model is missing from {demo.DEMO_DIR}; pass --model PATH or random:SIZE")
        pipe, bundle = demo.load_demo_pipeline(DEMO_MODELS[args.model], device=args.device, dtype=dtype)
        if official:  # the demo keeps its own size and layout; the sampler settings are the authors'
            _fill_defaults(args, {k: OFFICIAL[k] for k in OFFICIAL_SAMPLER})
            print_settings(args, "preset official (sampler)")
        _fill_defaults(args, {"solver": "unipc", "steps": bundle.steps, "shift": bundle.shift, "cfg": bundle.guidance,
                              "size": (bundle.size, bundle.size), "layout": bundle.layout})
        if args.vae is not None or get_layout(args.layout) != pipe.layout:
            raise CLIError("--model demo comes with its own VAE and layout; leave out --vae/--layout")
        if getattr(args, "negative_prompt", None) is not None:
            pipe.negative_prompt = args.negative_prompt
        prompts = [*(getattr(args, "prompt", None) or ()), *filter(None, [getattr(args, "set_prompt", None)])]
        warning = demo.unknown_words_message(pipe.text_encoder, prompts)
        if warning:
            print(f"mmpl: warning: {warning}", file=sys.stderr)
        layers = pipe.model.config.num_layers
        if args.weight_dtype != "compute" or args.blocks_on_device not in ("auto", str(layers)):
            raise CLIError("--weight-dtype and --blocks-on-device apply to --wan, random:SIZE and checkpoint files; "
                           "the demo model stays as it is")
        args.blocks_on_device = str(layers)
        pipe.kv_cache = _placement(args, pipe.model.config, pipe.layout, _given(args, FALLBACK), SMALL_CODECS).kv_cache
        return pipe
    if official:
        _fill_defaults(args, OFFICIAL)
        print_settings(args, "preset official")
    _fill_defaults(args, {"solver": "unipc", **FALLBACK})
    try:
        layout = get_layout(args.layout)
    except LayoutError as err:
        raise CLIError(f"--layout: {err}") from err
    from .placement_args import place_dit, streams_or_quantises

    cfg = _dit_config(args)
    placement = _placement(args, cfg, layout, _given(args, FALLBACK),
                           {**SMALL_CODECS, "vae_base_dim": args.vae_base_dim})
    dit = load_dit(args, "cpu" if streams_or_quantises(placement, cfg) else args.device)
    dit = place_dit(dit, args.device, placement)
    return MMPLPipeline(
        dit, load_vae(args), layout, HashedTextEncoder(dim=dit.text_embedding[0].weight.shape[1]),
        negative_prompt=_negative_prompt(args), device=args.device, dtype=dtype, kv_cache=placement.kv_cache,
    )


def _negative_prompt(args: argparse.Namespace) -> str:
    from ..text import WAN_NEGATIVE_PROMPT

    value = getattr(args, "negative_prompt", None)
    return WAN_NEGATIVE_PROMPT if value is None else value


def print_settings(args: argparse.Namespace, label: str) -> None:
    """One line with the sampler and video settings in effect (stderr)."""
    import sys

    parts = [f"{name} {getattr(args, name)}" for name in ("solver", "steps", "shift", "cfg") if hasattr(args, name)]
    if getattr(args, "size", None):
        parts.append(f"size {args.size[0]}x{args.size[1]}")
    for name in ("fps", "layout"):
        if getattr(args, name, None) is not None:
            parts.append(f"{name} {getattr(args, name)}")
    negative = getattr(args, "negative_prompt", None)
    parts.append("negative prompt: " + ("Wan2.1's default" if negative is None else repr(negative)))
    print(f"settings ({label}): " + ", ".join(parts), file=sys.stderr)


def parse_offload(text: str) -> set[str]:
    parts = {p.strip() for p in (text or "none").split(",") if p.strip()}
    if parts == {"none"}:
        return set()
    unknown = parts - set(OFFLOADABLE)
    if unknown:
        raise CLIError(f"--offload {text!r}: unknown part(s) {sorted(unknown)}; expected text, vae, text,vae or none")
    return parts


def build_wan_pipeline(args: argparse.Namespace):
    """The pipeline over a real Wan2.1 folder: umT5 + VAE from the folder, the DiT from --checkpoint (or the folder),
    the authors' settings for everything left out."""
    from ..checkpoints import CheckpointError, read_config
    from ..layout import LayoutError, get_layout
    from ..pipeline import MMPLPipeline
    from ..umt5 import TextEncoderError
    from .placement_args import place_dit, streams_or_quantises
    from ..vae import OffloadedWanVAE
    from ..wan_folder import (WanFolderError, count_params, find_wan_folder, load_folder_dit,
                              load_folder_text_encoder, load_folder_vae)

    if args.model != "demo":
        raise CLIError("--wan takes the DiT from --checkpoint FILE (or from the folder itself); leave out --model")
    offload = parse_offload(args.offload)
    _fill_defaults(args, OFFICIAL)
    if args.dtype is None:
        args.dtype = "bfloat16"
    print_settings(args, "--wan: the authors' settings unless given")
    dtype = getattr(torch, args.dtype)
    try:
        layout = get_layout(args.layout)
        folder = find_wan_folder(args.wan, need_dit=args.checkpoint is None)
        cfg = (read_config(args.checkpoint, ema=args.ema, num_heads=folder.num_heads) if args.checkpoint else
               folder.wan_config() or read_config(folder.dit, num_heads=folder.num_heads))
        codecs = {"text_encoder_params": count_params(folder.text_encoder), "vae_params": count_params(folder.vae)}
        placement = _placement(args, cfg, layout, _given(args, OFFICIAL), codecs)
        load_to = "cpu" if streams_or_quantises(placement, cfg) else args.device
        dit = place_dit(load_folder_dit(folder, args.checkpoint, ema=args.ema, dtype=dtype, device=load_to),
                        args.device, placement)
        if args.vae is not None:
            vae = load_vae(args)
        else:
            vae = load_folder_vae(folder, dtype=dtype, device="cpu" if "vae" in offload else args.device)
        if "vae" in offload:
            vae = OffloadedWanVAE(vae, args.device)
        on_cpu = placement.text_encoder == "cpu"
        text = load_folder_text_encoder(folder, dtype=dtype, device="cpu" if on_cpu else args.device,
                                        offload="text" in offload and not on_cpu)
    except LayoutError as err:
        raise CLIError(f"--layout: {err}") from err
    except (WanFolderError, TextEncoderError) as err:
        raise CLIError(str(err)) from err
    except CheckpointError as err:
        raise CLIError(f"--checkpoint: {err}" if args.checkpoint else f"--wan: {err}") from err
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(f"--wan {args.wan}: {err}") from err
    text_dim = dit.text_embedding[0].weight.shape[1]
    if text.dim != text_dim:
        raise CLIError(f"--wan {args.wan}: the text encoder gives {text.dim}-wide embeddings, the DiT takes {text_dim}")
    return MMPLPipeline(dit, vae, layout, text, negative_prompt=_negative_prompt(args), device=args.device, dtype=dtype,
                        kv_cache=placement.kv_cache)


def sampler_config(args: argparse.Namespace):
    from ..sampling import SamplerConfig

    try:
        return SamplerConfig(solver=args.solver or "unipc", steps=args.steps, shift=args.shift, guidance=args.cfg)
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
