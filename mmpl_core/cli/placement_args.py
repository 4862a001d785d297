"""`--kv-cache / --blocks-on-device / --weight-dtype / --text-encoder-on / --gpu-gib`: where the DiT's weights, the KV
cache and umT5 live on one device; the 'auto' choices come from the estimator for the device's memory."""
from __future__ import annotations

import argparse
import sys

import torch

from .common import CLIError

AUTO = "auto"


def add_placement_args(p: argparse.ArgumentParser) -> None:
    from ..model.fp8 import STORAGE_DTYPES

    g = p.add_argument_group("device memory (none of these change the output, except --weight-dtype)")
    g.add_argument("--kv-cache", choices=(AUTO, "device", "cpu"), default=AUTO,
                   help="where the KV cache lives: on the device, or in pinned CPU memory with each layer's K/V "
                        "copied in one layer ahead; auto: on the device when it fits the memory budget")
    g.add_argument("--blocks-on-device", default=AUTO, metavar="N|auto",
                   help="DiT blocks whose weights stay on the device; the others stay in pinned CPU memory and "
                        "stream in block by block, the next one copied while the current one runs (block swap); "
                        "auto: as many as the memory budget allows")
    g.add_argument("--weight-dtype", choices=STORAGE_DTYPES, default="compute",
                   help="storage of the blocks' linear weights: the compute dtype (--dtype) or float8_e4m3fn with a "
                        "scale per tensor, computed in --dtype (half the memory of bf16; changes the output)")
    g.add_argument("--text-encoder-on", choices=("device", "cpu"), default="device",
                   help="where umT5 encodes prompts: on the device (moved in while it encodes with --offload text) "
                        "or on the CPU (slower, never on the device: for devices under ~14 GiB)")
    g.add_argument("--gpu-gib", type=float,
                   help="memory budget of the device for the auto choices (default: the CUDA device's total memory; "
                        "on a CPU device everything stays resident)")


def add_kv_dtype_arg(p: argparse.ArgumentParser) -> None:
    from ..plan import KV_DTYPES

    p.add_argument("--kv-dtype", choices=KV_DTYPES, default="compute",
                   help="K/V storage of the KV cache: as computed, or float8_e4m3fn with a scale per frame and head "
                        "(half the bytes of bf16; a setting of the plan: it changes the output slightly)")


def _budget_gib(args) -> float | None:
    if getattr(args, "gpu_gib", None) is not None:
        return args.gpu_gib
    device = torch.device(args.device)
    if device.type == "cuda" and torch.cuda.is_available():
        from ..memory import GIB

        return torch.cuda.get_device_properties(device).total_memory / GIB
    return None


def resolve_placement(args, cfg, layout, *, nbytes: int, defaults: dict, offload: set[str], **memory_kwargs):
    """The `memory.Placement` for the arguments: forced choices as given, 'auto' ones picked by
    `placement.choose_placement` for the budget (the command's size, guidance, steps and plan settings; `defaults`
    for those a command does not take; `offload`: the parts kept in CPU memory; `memory_kwargs`: the text encoder's
    and VAE's sizes for `estimate_memory`). Printed to stderr when anything was chosen."""
    from ..memory import Placement
    from ..placement import choose_placement, describe

    blocks = args.blocks_on_device
    if blocks != AUTO:
        try:
            blocks = int(blocks)
        except ValueError:
            raise CLIError(f"--blocks-on-device {args.blocks_on_device!r}: expected a number of blocks or 'auto'")
        if not 0 <= blocks <= cfg.num_layers:
            raise CLIError(f"--blocks-on-device {blocks}: the DiT has {cfg.num_layers} blocks (0..{cfg.num_layers})")
    def get(name):
        value = getattr(args, name, None)
        return defaults[name] if value is None else value

    fixed = {"weight_dtype": args.weight_dtype, "kv_dtype": get("kv_dtype"), "text_encoder": args.text_encoder_on,
             "cfg_branches": get("cfg_branches")}
    budget = _budget_gib(args)
    if budget is None or (args.kv_cache != AUTO and blocks != AUTO):
        return Placement(blocks_on_device=None if blocks in (AUTO, cfg.num_layers) else blocks,
                         kv_cache="device" if args.kv_cache == AUTO else args.kv_cache, **fixed)
    if args.kv_cache != AUTO:
        fixed["kv_cache"] = args.kv_cache
    if blocks != AUTO:
        fixed["blocks_on_device"] = blocks
    height, width = get("size")
    best, _ = choose_placement(cfg, layout, height, width, budget, steps=get("steps"), guidance=get("cfg"),
                               nbytes=nbytes, fixed=fixed, offload_text="text" in offload,
                               offload_vae="vae" in offload, **memory_kwargs)
    verdict = "fits" if best.fits else "does NOT fit: expect out-of-memory errors"
    print(f"placement for {budget:.1f} GiB: {describe(best.placement, cfg)}; predicted peak "
          f"{best.peak / 2**30:.3g} GiB ({verdict})", file=sys.stderr)
    return best.placement


def place_dit(model: torch.nn.Module, device: str, placement) -> torch.nn.Module:
    """Put a DiT (in its compute dtype, anywhere) on `device` as `placement` says: float8 linear weights, resident
    blocks on the device, the other blocks streamed from CPU memory."""
    from ..model.fp8 import store_linear_weights_in_float8
    from ..model.streaming import stream_blocks

    if placement.weight_dtype != "compute":
        store_linear_weights_in_float8(model)
    stream_blocks(model, device, placement.resident_blocks(model.config))
    return model


def streams_or_quantises(placement, cfg) -> bool:
    """Whether the DiT should first be loaded into CPU memory (it will not all live on the device as loaded)."""
    return placement.weight_dtype != "compute" or placement.resident_blocks(cfg) < cfg.num_layers
