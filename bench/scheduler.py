"""Adaptive workload scheduling benchmark: simulated makespan against the lower bound, and real runs on this CPU.

    python bench/scheduler.py [--segments-real 6] [--steps 20]

1. Real runs of the embedded demo model with worker processes (1 torch thread each): 1 worker with batched CFG,
   2 workers with batched CFG, 2 workers with split CFG (every plan task shared by both), 1 worker in memory mode.
   The 2-worker runs' task times form the cost model (on this CPU two workers slow each other down, so these are
   the figures of a device that works beside another): batched tasks as measured, split tasks as the measured half,
   a split-mode task on one device as two halves.
2. For 4 and 12 segments and 1, 2, 4, 8 workers, both modes: the CFG setting (batched, or split plan chunks) and
   policy the simulation picks, its simulated makespan over the lower bound max(total work / workers, critical
   path) of that setting, and over the lower of both settings' bounds; the speed-up over one batched device.
3. Each real run's makespan over the simulation of the same graph, policy and worker count with the costs measured
   in that run. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmpl_core.cli import build_parser  # noqa: E402
from mmpl_core.cli.common import build_pipeline  # noqa: E402
from mmpl_core.cli.schedule_args import PipelineSpec  # noqa: E402
from mmpl_core.schedule import (  # noqa: E402
    CostModel, ProcessPool, best_policy, build_graph, lower_bound, run_plan, simulate,
)
from mmpl_core.schedule.costs import SPLIT  # noqa: E402

PROMPT = "a red circle and a blue square bounce"


def real_run(args, pipe, segments: int, workers: int, *, mode: str, cfg_branches: str, policy: str | None):
    settings = replace(_settings(pipe, args), handoff={"throughput": "terminal", "memory": "midpoint"}[mode],
                       cfg_branches=cfg_branches)
    plan = pipe.new_plan([PROMPT], segments, settings)
    pool = ProcessPool(PipelineSpec(args), ["cpu"] * workers, threads=1)
    try:
        result = run_plan(plan, pool, pipe.prompt_fn(settings.sampler), policy=policy)
    finally:
        pool.close()
    replay = simulate(build_graph(plan), result.costs, workers, result.report.policy, split=cfg_branches == "split")
    return plan, result, replay


def _settings(pipe, args):
    from mmpl_core.plan import GenerationSettings
    from mmpl_core.sampling import SamplerConfig

    return GenerationSettings(sampler=SamplerConfig("unipc", args.steps, args.shift, args.cfg), height=args.size[0],
                              width=args.size[1])


def merged_costs(batched: CostModel, split: CostModel) -> CostModel:
    """Batched task costs from the 1-worker run, split halves from the 2-worker run; a split-mode plan task on one
    device runs both branches one after the other: two halves."""
    out = CostModel(prior_units=dict(batched.prior_units), seconds=dict(batched.seconds))
    for key, seconds in split.seconds.items():
        if key.endswith(SPLIT):
            out.seconds[key] = seconds
    return out


def split_mode_costs(costs: CostModel) -> CostModel:
    """Costs with cfg_branches "split": a denoising task on one device runs both branches one after the other (two
    halves); a half not measured is the task's batched time × the split share measured on the plan tasks."""
    out = CostModel(prior_units=dict(costs.prior_units), seconds=dict(costs.seconds))
    share = costs.split_share()
    for key, seconds in costs.seconds.items():
        if key.startswith(("plan:", "populate:")) and not key.endswith(SPLIT):
            half = costs.seconds.get(key + SPLIT, seconds * share)
            out.seconds[key + SPLIT], out.seconds[key] = half, 2 * half
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments-real", type=int, default=6)
    p.add_argument("--steps", type=int, default=20)
    opts = p.parse_args()
    args = build_parser().parse_args(["generate", "--prompt", PROMPT, "--out", "unused.mp4", "--steps", str(opts.steps)])
    pipe = build_pipeline(args)
    import torch

    torch.set_num_threads(1)
    n = opts.segments_real
    print(f"real runs: demo model, {n} segments, {opts.steps} steps, worker processes with 1 torch thread each")
    plan1, run1, sim1 = real_run(args, pipe, n, 1, mode="throughput", cfg_branches="batched", policy=None)
    _, run2b, sim2b = real_run(args, pipe, n, 2, mode="throughput", cfg_branches="batched", policy=None)
    plan2, run2, sim2 = real_run(args, pipe, n, 2, mode="throughput", cfg_branches="split", policy="split-all")
    _, runm, simm = real_run(args, pipe, n, 1, mode="memory", cfg_branches="batched", policy=None)
    # Two worker processes share this CPU's memory bandwidth, so a task runs slower beside another than alone; the
    # simulated devices take their costs from the 2-worker runs, where every task ran beside another.
    costs = merged_costs(run2b.costs, run2.costs)
    print("measured seconds per task, alone (1 worker):", {k: round(v, 3) for k, v in sorted(run1.costs.seconds.items())})
    print("measured seconds per task, beside another (2 workers; the simulation's costs):",
          {k: round(v, 3) for k, v in sorted(costs.seconds.items())})
    for name, run, sim in (("1 worker, batched", run1, sim1), ("2 workers, batched", run2b, sim2b),
                           ("2 workers, split", run2, sim2), ("1 worker, memory mode", runm, simm)):
        print(f"  {name:<22} real {run.report.makespan:6.2f} s  simulated {sim.makespan:6.2f} s  "
              f"ratio {run.report.makespan / sim.makespan:.3f}  policy {run.report.policy}")
    frames = {"throughput": sum(len(v) - (5 if k else 0) for k, v in run1.videos.items()),
              "memory": sum(len(v) - (5 if k else 0) for k, v in runm.videos.items())}
    for mode, run in (("throughput", run1), ("memory", runm)):
        peak_cache = max(r.cache_bytes for r in run.report.records)
        by_kind = {}
        for r in run.report.records:
            kind = r.task.split("[")[0]
            by_kind[kind] = max(by_kind.get(kind, 0), r.cache_bytes)
        print(f"  {mode:<10} mode: {frames[mode]} frames in {run.report.makespan:.2f} s = "
              f"{frames[mode] / run.report.makespan:.1f} frames/s on 1 worker; peak KV cache {peak_cache / 1e6:.3f} MB "
              f"(per task kind, MB: { {k: round(v / 1e6, 3) for k, v in by_kind.items()} }); "
              f"peak RSS {max(run.report.peak_rss_bytes.values()) / 1e9:.2f} GB")

    rows, ratios, strict_ratios, speedups = [], {}, {}, {}
    for mode in ("throughput", "memory"):
        for segments in (4, 12):
            from mmpl_core.layout import get_layout
            from mmpl_core.plan import GenerationSettings, Plan
            from mmpl_core.sampling import SamplerConfig

            base = GenerationSettings(sampler=SamplerConfig("unipc", opts.steps, 3.0, 3.0),
                                      handoff={"throughput": "terminal", "memory": "midpoint"}[mode])
            plan = Plan.new(get_layout("mmpl-t2v-13"), base, ["x"], segments, "fp")
            graph = build_graph(plan)
            one = simulate(graph, costs, 1).makespan  # one device, batched CFG: the baseline
            split_costs = split_mode_costs(costs)
            for workers in (1, 2, 4, 8):
                split_run = best_policy(graph, split_costs, workers, split=True)
                batched_run = best_policy(graph, costs, workers, split=False)
                split_bound = lower_bound(graph, split_costs, workers, split=True)
                batched_bound = lower_bound(graph, costs, workers)
                if split_run.makespan < batched_run.makespan:
                    chosen, setting, bound = split_run, "split", split_bound
                else:
                    chosen, setting, bound = batched_run, "batched", batched_bound
                ratio = chosen.makespan / bound
                strict = chosen.makespan / min(split_bound, batched_bound)
                ratios[(mode, segments, workers)] = ratio
                strict_ratios[(mode, segments, workers)] = strict
                speedups[(mode, segments, workers)] = one / chosen.makespan
                rows.append(f"| {mode} | {segments} | {workers} | {setting}, {chosen.policy} | {chosen.makespan:.2f} | "
                            f"{bound:.2f} | {ratio:.3f} | {strict:.3f} | {one / chosen.makespan:.2f}× | "
                            f"{one / batched_run.makespan:.2f}× |")
    print("\n| mode | segments | workers | CFG setting, policy | simulated makespan (s) | lower bound of that "
          "setting (s) | ratio | ratio to the lower of both settings' bounds | speed-up | speed-up batched only |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    summary = {
        "max_ratio_to_bound": round(max(v for k, v in ratios.items() if k[0] == "throughput"), 4),
        "max_ratio_to_bound_memory_mode": round(max(v for k, v in ratios.items() if k[0] == "memory"), 4),
        "max_ratio_to_either_bound": round(max(v for k, v in strict_ratios.items() if k[0] == "throughput"), 4),
        "speedup_4w_12seg": round(speedups[("throughput", 12, 4)], 3),
        "real_vs_sim_1w": round(run1.report.makespan / sim1.makespan, 4),
        "real_vs_sim_2w": round(run2.report.makespan / sim2.makespan, 4),
        "real_vs_sim_2w_batched": round(run2b.report.makespan / sim2b.makespan, 4),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
