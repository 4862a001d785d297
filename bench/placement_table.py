"""What fits where: the placement `mmpl estimate --gpu-gib N` chooses for Wan2.1 14B and 1.3B at 480×832 (CFG 5,
50 steps, umT5-XXL and the Wan VAE, --offload text) on 80, 48, 24, 16 and 12 GiB devices, as a Markdown table.

    PYTHONPATH=. .venv/bin/python bench/placement_table.py [--pcie-gbps 25]

Each budget is timed at the speeds of a typical card of that size (`placement.TYPICAL_DEVICES`).
"""
from __future__ import annotations

import argparse
from dataclasses import replace

from mmpl_core.layout import WAN_T2V
from mmpl_core.memory import GIB
from mmpl_core.model import WAN_CONFIGS
from mmpl_core.placement import PCIE_GBPS, RESERVED_GIB, choose_placement, cli_flags, describe, typical_device

BUDGETS_GIB = (80, 48, 24, 16, 12)
HEIGHT, WIDTH, STEPS, GUIDANCE = 480, 832, 50, 5.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pcie-gbps", type=float, default=PCIE_GBPS)
    args = p.parse_args(argv)
    print(f"| model | device (assumed speed) | placement | `mmpl generate` options | peak (of N − {RESERVED_GIB:g} GiB) "
          "| predicted slowdown | segment, FLOP bound |")
    print("|---|---|---|---|---|---|---|")
    for size in ("14B", "1.3B"):
        cfg = WAN_CONFIGS[size]
        for gib in BUDGETS_GIB:
            device = replace(typical_device(gib), pcie_gbps=args.pcie_gbps)
            best, _ = choose_placement(cfg, WAN_T2V, HEIGHT, WIDTH, gib, device, steps=STEPS, guidance=GUIDANCE)
            peak = f"{best.peak / GIB:.1f} GiB" + ("" if best.fits else " (does not fit)")
            where = f"{gib} GiB ({device.name}, {device.tflops:g} TFLOP/s)"
            print(f"| {size} | {where} | {describe(best.placement, cfg)} | `{cli_flags(best.placement, cfg)}` | {peak} "
                  f"| {best.slowdown:.3f}× | {best.flop_seconds:.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
