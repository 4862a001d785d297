"""`mmpl estimate`: predicted peak GPU memory per device (and the FLOP bound) for a model, resolution and layout, and
the placement (resident or streamed weights, KV cache on the device or in CPU memory, 8-bit or not, CFG batched or
split) that fits a memory budget with the least predicted time."""
from __future__ import annotations

import argparse
import json

from .common import OFFICIAL, RANDOM, CLIError, add_wan_args, parse_offload


def register(sub) -> None:
    p = sub.add_parser("estimate", help="predict the peak memory per device and the FLOPs of a segment (no weights read)")
    add_wan_args(p)
    p.add_argument("--model", help="instead of --wan: random:SIZE (random:1.3B, random:14B, ...) or a checkpoint file")
    p.add_argument("--ema", action="store_true", help="read generator_ema of an MMPL checkpoint")
    p.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=OFFICIAL["size"])
    p.add_argument("--layout", default=OFFICIAL["layout"])
    p.add_argument("--cfg", type=float, default=OFFICIAL["cfg"], help="guidance scale (1 = one branch, batch 1)")
    p.add_argument("--steps", type=int, default=OFFICIAL["steps"])
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    p.add_argument("--gpu-gib", type=float, default=80.0,
                   help="device memory (GiB): the placement chosen fits it less 2 GiB (CUDA context, fragmentation)")
    p.add_argument("--tflops", type=float,
                   help="device peak dense TFLOP/s in the dtype (default: a typical card of --gpu-gib: 80 GiB H100 "
                        "989, 48 L40S 362, 24 RTX 4090 165, 16 RTX 4080 97.5, 12 RTX 4070 58.3)")
    p.add_argument("--pcie-gbps", type=float, help="effective host-to-device GB/s (default 25: PCIe 4.0 x16)")
    g = p.add_argument_group("placement choices ('auto': let the estimator choose)")
    g.add_argument("--kv-cache", choices=("auto", "device", "cpu"), default="auto")
    g.add_argument("--kv-dtype", choices=("auto", "compute", "float8_e4m3fn"), default="auto")
    g.add_argument("--weight-dtype", choices=("auto", "compute", "float8_e4m3fn"), default="auto")
    g.add_argument("--blocks-on-device", default="auto", help="DiT blocks resident on the device, or 'auto'")
    g.add_argument("--cfg-branches", choices=("auto", "batched", "split"), default="auto")
    g.add_argument("--text-encoder-on", choices=("auto", "device", "cpu"), default="auto")
    p.add_argument("--json", action="store_true", help="end with one line of JSON: the chosen placement and figures")
    p.set_defaults(func=run)


def _model_config(args):
    """(WanConfig, text encoder params or None, VAE params or None, VAE base dim or None, description)."""
    from ..checkpoints import CheckpointError, read_config
    from ..model import WAN_CONFIGS
    from ..wan_folder import WanFolderError, count_params, find_wan_folder, vae_base_dim

    if args.wan is not None:
        try:
            folder = find_wan_folder(args.wan, need_dit=args.checkpoint is None)
            if args.checkpoint is not None:
                cfg = read_config(args.checkpoint, ema=args.ema, num_heads=folder.num_heads)
            else:
                cfg = folder.wan_config() or read_config(folder.dit, num_heads=folder.num_heads)
            sizes = count_params(folder.text_encoder), count_params(folder.vae), vae_base_dim(folder)
        except (WanFolderError, CheckpointError) as err:
            raise CLIError(str(err)) from err
        return (cfg, *sizes, folder.describe())
    if args.model is None:
        raise CLIError("estimate needs --wan DIR (optionally with --checkpoint FILE) or --model random:SIZE|FILE")
    if args.model.startswith(RANDOM):
        size = args.model[len(RANDOM):]
        if size not in WAN_CONFIGS:
            raise CLIError(f"--model {args.model!r}: unknown size; expected random:SIZE with SIZE in {list(WAN_CONFIGS)}")
        return WAN_CONFIGS[size], None, None, None, f"{size}-shaped DiT with umT5-XXL and the Wan2.1 VAE"
    try:
        return read_config(args.model, ema=args.ema), None, None, None, f"{args.model} with umT5-XXL and the Wan2.1 VAE"
    except CheckpointError as err:
        raise CLIError(f"--model: {err}") from err


def run(args: argparse.Namespace) -> int:
    from ..layout import LayoutError, get_layout
    from ..memory import GB, GIB, estimate_memory, group_costs, segment_flops

    try:
        layout = get_layout(args.layout)
    except LayoutError as err:
        raise CLIError(f"--layout: {err}") from err
    cfg, text_params, vae_params, base_dim, what = _model_config(args)
    offload = parse_offload(args.offload)
    nbytes = {"bfloat16": 2, "float16": 2, "float32": 4}[args.dtype]
    height, width = args.size
    kwargs = {k: v for k, v in (("text_encoder_params", text_params), ("vae_params", vae_params),
                                ("vae_base_dim", base_dim)) if v is not None}
    print(f"model: {what}")
    print(f"DiT dim {cfg.dim}, {cfg.num_layers} layers, {cfg.num_heads} heads; {height}x{width}, layout {layout.name}, "
          f"{args.dtype}, CFG {args.cfg:g} ({'batched, one pass' if args.cfg != 1 else 'off'}), offload "
          f"{','.join(sorted(offload)) or 'none'}")
    rows = [estimate_memory(cfg, layout, height, width, role=role, guidance=args.cfg, nbytes=nbytes,
                            offload_text="text" in offload, offload_vae="vae" in offload, **kwargs)
            for role in ("plan", "populate", "segment")]
    print("\neverything on the device (the unconstrained placement):")
    print(f"predicted memory per device (GB = 1e9 bytes)   {'plan only':>10} {'populate':>10} {'both':>10}")
    lines = [("DiT weights", "weights"), ("KV cache", "kv_cache"), ("text K/V (cross-attention)", "text_kv"),
             ("activations (largest chunk)", "activations"), ("umT5 resident", "text_encoder"),
             ("VAE resident", "vae"), ("sampling phase", "sampling"), ("umT5 encoding phase", "encoding"),
             ("VAE decode phase (rough)", "decoding"), ("peak", "peak")]
    for label, attr in lines:
        print(f"  {label:<43} " + " ".join(f"{getattr(r, attr) / GB:>10.2f}" for r in rows))
    print(f"  {'KV slots (latent frames cached)':<43} " + " ".join(f"{r.kv_slots:>10d}" for r in rows))
    peak = rows[-1].peak
    left = args.gpu_gib - peak / GIB
    verdict = "fits" if left >= 0 else "does NOT fit"
    print(f"  peak {peak / GIB:.1f} GiB {verdict} a {args.gpu_gib:g} GiB device ({left:+.1f} GiB left; the CUDA "
          "context and allocator slack take about 1-2 GiB)")
    batch = 1 if args.cfg == 1 else 2
    device = _device_speed(args)
    print(f"\nFLOP bound at {device.tflops:g} TFLOP/s (matmuls only, batch {batch}):")
    for cost in group_costs(cfg, layout, height, width, batch):
        print(f"  {cost.name:<9} {cost.frames} frames, {cost.q_tokens} query / {cost.k_tokens} key tokens: "
              f"{cost.flops_per_step / 1e12:8.1f} TFLOP/step = {cost.flops_per_step / (device.tflops * 1e12):6.3f} "
              "s/step")
    total = segment_flops(cfg, layout, height, width, args.steps, batch)
    print(f"  one segment, {args.steps} steps: {total / 1e15:.1f} PFLOP = {total / (device.tflops * 1e12):.0f} s at "
          "100% of peak")
    memory_kwargs = dict(kwargs, offload_text="text" in offload, offload_vae="vae" in offload)
    _print_placement(args, cfg, layout, nbytes, device, memory_kwargs)
    return 0


def _device_speed(args):
    from dataclasses import replace

    from ..placement import PCIE_GBPS, typical_device

    device = typical_device(args.gpu_gib)
    if args.tflops is not None:
        device = replace(device, name="a device", tflops=args.tflops)
    return replace(device, pcie_gbps=args.pcie_gbps or PCIE_GBPS)


def _fixed_choices(args, cfg) -> dict:
    fixed = {name: getattr(args, name) for name in ("kv_cache", "kv_dtype", "weight_dtype", "cfg_branches",
                                                     "text_encoder_on") if getattr(args, name) != "auto"}
    if "text_encoder_on" in fixed:
        fixed["text_encoder"] = fixed.pop("text_encoder_on")
    if args.blocks_on_device != "auto":
        try:
            fixed["blocks_on_device"] = int(args.blocks_on_device)
        except ValueError:
            raise CLIError(f"--blocks-on-device {args.blocks_on_device!r}: expected a number of blocks or 'auto'")
        if not 0 <= fixed["blocks_on_device"] <= cfg.num_layers:
            raise CLIError(f"--blocks-on-device {args.blocks_on_device}: the DiT has {cfg.num_layers} blocks")
    return fixed


def _print_placement(args, cfg, layout, nbytes, device, memory_kwargs) -> None:
    """The placement that fits --gpu-gib with the least predicted time, its peak and predicted slowdown."""
    from dataclasses import asdict

    from ..memory import GIB
    from ..placement import RESERVED_GIB, choose_placement, cli_flags, describe

    height, width = args.size
    best, _ = choose_placement(cfg, layout, height, width, args.gpu_gib, device, steps=args.steps,
                               guidance=args.cfg, nbytes=nbytes, fixed=_fixed_choices(args, cfg), **memory_kwargs)
    mem = best.memory
    print(f"\nplacement for a {args.gpu_gib:g} GiB device ({args.gpu_gib - RESERVED_GIB:g} GiB usable), assuming "
          f"{device.name}: {device.tflops:g} TFLOP/s, {device.memory_gbps:g} GB/s memory, {device.pcie_gbps:g} GB/s "
          "host-to-device:")
    print(f"  {describe(best.placement, cfg)}")
    print(f"  flags: {cli_flags(best.placement, cfg)}")
    print(f"  peak {best.peak / GIB:.2f} GiB ({'fits' if best.fits else 'does NOT fit'}): sampling "
          f"{mem.sampling / GIB:.2f}, umT5 encoding {mem.encoding / GIB:.2f}, VAE decoding {mem.decoding / GIB:.2f}; "
          f"in CPU memory: {mem.extra['host_weights'] / GIB:.2f} GiB of weights, {mem.extra['host_kv'] / GIB:.2f} "
          "GiB of KV cache")
    print(f"  one segment ({args.steps} steps): predicted {best.seconds:.0f} s against a FLOP bound of "
          f"{best.flop_seconds:.0f} s: slowdown {best.slowdown:.3f}x ({best.transfer_bytes / 1e9:.0f} GB moved "
          "host-to-device, overlapped with compute layer by layer)")
    if args.json:
        print(json.dumps({
            "peak_gib": round(best.peak / GIB, 3), "fits": best.fits, "placement": asdict(best.placement),
            "predicted_slowdown": round(best.slowdown, 4), "budget_gib": args.gpu_gib - RESERVED_GIB,
            "sampling_gib": round(mem.sampling / GIB, 3), "predicted_segment_s": round(best.seconds, 1),
            "flop_bound_segment_s": round(best.flop_seconds, 1), "transfer_gb": round(best.transfer_bytes / 1e9, 1),
            "device": asdict(device), "flags": cli_flags(best.placement, cfg)}))
