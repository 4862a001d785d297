"""The scheduler inside ComfyUI: the same 12-segment demo plan, planned and populated by Macro Chain ("populate while
planning") on 1 and on 2 CPU "devices" (worker threads with one torch thread each, as the CLI benchmark's worker
processes), through a real ComfyUI server. Prints each run's makespan, the speed-up, and the ratio to the core's
simulation of the same task graph with the task times the run measured (goal: within 10 %).

    .venv/bin/python bench/comfy_scheduler.py [--segments 12] [--steps 20] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "comfy"), str(REPO)]

from comfy_fixtures import prepare_base_dir, serve  # noqa: E402
from demo_graphs import demo_chain, with_scheduler  # noqa: E402

PROMPT = "two objects: a red circle and a yellow square bounce over a navy to black gradient"


def workflow(devices: str, segments: int, steps: int, seed: int) -> dict:
    """The demo chain (UniPC, CFG 3) populating while planning on `devices`, and Save Plan (an output node)."""
    prompt = with_scheduler(demo_chain(segments, seed, steps, text=PROMPT), devices)
    prompt["6"]["inputs"].update(cfg=3.0, sampler="unipc", populate="while planning")
    prompt["9"] = {"class_type": "MMPL_SavePlan", "inputs": {"plan": ["6", 0], "name": f"mmpl/bench_{devices}"}}
    return prompt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mmpl_comfy_bench_") as tmp, serve(prepare_base_dir(Path(tmp))) as server:
        # a warm-up run loads the demo model and compiles nothing else into the timed runs
        server.client.run(workflow("cpu", 1, 2, seed=999), timeout=900)
        for devices in ("cpu", "cpu,cpu"):
            shutil.rmtree(server.base_dir / "output" / "mmpl" / "cache", ignore_errors=True)  # the same work again
            result = server.client.run(workflow(devices, args.segments, args.steps, seed=7), timeout=3600)
            if result.error is not None:
                print(result.error, file=sys.stderr)
                return 1
            [summary] = result.outputs["6"]["mmpl_schedule"]
            rows[devices] = summary
            print(f"{devices:>8}: {summary['tasks']} tasks, policy {summary['policy']}, makespan "
                  f"{summary['makespan']:.1f} s, simulated {summary['simulated']:.1f} s "
                  f"(real/simulated {summary['makespan'] / summary['simulated']:.3f})", flush=True)
    one, two = rows["cpu"], rows["cpu,cpu"]
    figures = {
        "segments": args.segments, "steps": args.steps, "runs": rows,
        "speedup_2_devices": one["makespan"] / two["makespan"],
        "real_vs_simulated": {k: v["makespan"] / v["simulated"] for k, v in rows.items()},
    }
    print(f"speed-up on 2 devices: {figures['speedup_2_devices']:.2f}x; real/simulated: "
          + ", ".join(f"{k} {v:.3f}" for k, v in figures["real_vs_simulated"].items()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
