"""Time the 4-latent VAE bridge against the official full-length bridge on one VAE.

    PYTHONPATH=. .venv/bin/python bench/bridge.py [--base-dim 16] [--size 64 64] [--repeats 3] [--num-frames 21]

Both paths run in the same process on the same inputs, interleaved (4-latent, full, 4-latent, full, …) after one
warm-up call of each, and the median of the repeats is reported. The last line printed is a JSON object with
`bridge_cost_ratio` = median full-length wall seconds / median 4-latent wall seconds, both times, the max abs
difference between the two outputs, and the config. On a shared CPU the wall times are noisy; the JSON also gives
the ratio of the minimum wall times and of the median process CPU times.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from mmpl_core.bridge import bridge_pixel_frames, full_length_bridge, vae_bridge
from mmpl_core.vae import SPATIAL_STRIDE, TEMPORAL_STRIDE, build_tiny_vae, load_wan_vae


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device):
    """(wall seconds, process CPU seconds, result). CPU time is less disturbed by other processes on a shared CPU."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", default=None, help="path to a real Wan2.1 VAE (default: a tiny random one)")
    p.add_argument("--base-dim", type=int, default=16, help="base_dim of the tiny random VAE (default 16)")
    p.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"), help="pixel size (default 64 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each path (default 3)")
    p.add_argument("--num-frames", type=int, default=21, help="latent frames of the full-length path (default 21)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    h_px, w_px = args.size
    if h_px % SPATIAL_STRIDE or w_px % SPATIAL_STRIDE:
        p.error(f"--size must be multiples of {SPATIAL_STRIDE}, got {h_px} {w_px}")
    if args.num_frames < 4:
        p.error("--num-frames must be at least 4 (the bridge's 4 latents)")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.vae:
        vae = load_wan_vae(args.vae, dtype=dtype, device=device)
        vae_name = args.vae
    else:
        vae = build_tiny_vae(args.base_dim, seed=args.seed)
        if device.type != "cpu" or dtype != torch.float32:  # .to() only when needed: it warns about dtype casts
            vae.vae.to(device=device, dtype=dtype)
        vae_name = f"tiny(base_dim={args.base_dim})"

    h, w = h_px // SPATIAL_STRIDE, w_px // SPATIAL_STRIDE
    g = torch.Generator().manual_seed(args.seed + 1)
    first = torch.randn(vae.z_dim, h, w, generator=g)
    terminal = torch.randn(vae.z_dim, 2, h, w, generator=g)

    short = lambda: vae_bridge(vae, first, terminal)  # noqa: E731
    full = lambda: full_length_bridge(vae, first, terminal, num_frames=args.num_frames)  # noqa: E731

    *_, out_short = _timed(short, device)  # warm-up
    *_, out_full = _timed(full, device)
    max_abs_diff = (out_short - out_full).abs().max().item()

    t_short, t_full, c_short, c_full = [], [], [], []
    for _ in range(args.repeats):  # interleaved so drifting machine load hits both paths alike
        wall, cpu, _ = _timed(short, device)
        t_short.append(wall), c_short.append(cpu)
        wall, cpu, _ = _timed(full, device)
        t_full.append(wall), c_full.append(cpu)
    s_short, s_full = statistics.median(t_short), statistics.median(t_full)
    ratio = s_full / s_short
    ratio_min = min(t_full) / min(t_short)
    ratio_cpu = statistics.median(c_full) / statistics.median(c_short)

    wanted = bridge_pixel_frames()
    full_px = 1 + TEMPORAL_STRIDE * (args.num_frames - 1)
    rows = [
        ("4-latent bridge", s_short, 4, 1 + TEMPORAL_STRIDE * 3, wanted),
        (f"full-length ({args.num_frames})", s_full, args.num_frames, full_px, full_px),
    ]
    print(f"VAE {vae_name} on {device} {args.dtype}, {h_px}x{w_px} px ({h}x{w} latent), "
          f"median of {args.repeats}, torch threads {torch.get_num_threads()}")
    print(f"{'path':<20} {'s/bridge':>10} {'latents dec':>12} {'px dec':>7} {'px enc':>7}")
    for name, sec, lat, dec, enc in rows:
        print(f"{name:<20} {sec:>10.4f} {lat:>12d} {dec:>7d} {enc:>7d}")
    print(f"ratio full/4-latent: {ratio:.2f}x median wall ({ratio_min:.2f}x min wall, {ratio_cpu:.2f}x median CPU)"
          f"   max |diff|: {max_abs_diff:.3g}")

    result = {
        "bridge_cost_ratio": round(ratio, 3),
        "four_latent_s": round(s_short, 5),
        "full_length_s": round(s_full, 5),
        "bridge_cost_ratio_min": round(ratio_min, 3),
        "bridge_cost_ratio_cpu": round(ratio_cpu, 3),
        "four_latent_times_s": [round(t, 5) for t in t_short],
        "full_length_times_s": [round(t, 5) for t in t_full],
        "four_latent_cpu_s": round(statistics.median(c_short), 5),
        "full_length_cpu_s": round(statistics.median(c_full), 5),
        "max_abs_diff": max_abs_diff,
        "config": {
            "vae": vae_name,
            "size": [h_px, w_px],
            "latent_size": [h, w],
            "num_frames": args.num_frames,
            "repeats": args.repeats,
            "device": str(device),
            "dtype": args.dtype,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "frames": {
                "four_latent": {"latents_decoded": 4, "pixels_decoded": 13, "pixels_encoded": wanted},
                "full_length": {"latents_decoded": args.num_frames, "pixels_decoded": full_px,
                                "pixels_encoded": full_px},
            },
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
