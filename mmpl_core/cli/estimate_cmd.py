"""`mmpl estimate`: predicted peak GPU memory per device (and the FLOP bound) for a model, resolution and layout."""
from __future__ import annotations

import argparse

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
    p.add_argument("--gpu-gib", type=float, default=80.0, help="device memory to compare against (GiB)")
    p.add_argument("--tflops", type=float, default=989.0,
                   help="device peak dense TFLOP/s in the dtype for the FLOP bound (H100 SXM bf16: 989)")
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
    print(f"\npredicted memory per device (GB = 1e9 bytes)   {'plan only':>10} {'populate':>10} {'both':>10}")
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
    print(f"\nFLOP bound at {args.tflops:g} TFLOP/s (matmuls only, batch {batch}):")
    for cost in group_costs(cfg, layout, height, width, batch):
        print(f"  {cost.name:<9} {cost.frames} frames, {cost.q_tokens} query / {cost.k_tokens} key tokens: "
              f"{cost.flops_per_step / 1e12:8.1f} TFLOP/step = {cost.flops_per_step / (args.tflops * 1e12):6.3f} s/step")
    total = segment_flops(cfg, layout, height, width, args.steps, batch)
    print(f"  one segment, {args.steps} steps: {total / 1e15:.1f} PFLOP = {total / (args.tflops * 1e12):.0f} s at "
          "100% of peak")
    return 0
