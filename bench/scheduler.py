"""Adaptive workload scheduling benchmark: simulated makespan against the lower bound, and real runs on this CPU.

    python bench/scheduler.py [--segments-real 6] [--steps 20] [--configs demo,wan]

Two configurations: "demo", the embedded demo model on its 13-latent layout (planning ≈ 45 % of a segment's work),
and "wan", a random-weight model of the demo's shape on Wan2.1's 21-latent layout `wan-t2v` (planning about a
third, as for the real model; task times do not depend on the weights). For each:

1. Real runs with worker processes (1 torch thread each): 1 worker with batched CFG, 2 workers with batched CFG,
   2 workers with split CFG (every plan task shared by both), 1 worker in memory mode. The 2-worker runs' task
   times form the cost model (on this CPU two workers slow each other down, so these are the figures of a device
   that works beside another).
2. For 4 and 12 segments and 1, 2, 4, 8 workers, both modes, each CFG setting (batched; split-plan: plan chunks
   shareable; split: every chunk): the policy the simulation picks. The table shows the fastest setting, its
   makespan over the issue's lower bound max(total work / workers, critical path) of that setting (with splits
   allowed, the bound takes the least any splitting can reach), over the start-aware bound (nothing else can run
   while the first plan does), and the speed-up over one device with batched CFG.
3. Each real run's makespan over the simulation of the same graph, policy and worker count with the costs measured
   in that run.

The last line is JSON: the issue's keys from the "wan" configuration (the paper's layout), and the same figures of
every configuration under its name.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmpl_core.data.pca_latents import PCALatentSpace  # noqa: E402
from mmpl_core.demo import DemoBundle, load_demo_pipeline  # noqa: E402
from mmpl_core.layout import get_layout  # noqa: E402
from mmpl_core.memory import AUTHORS_H100_SEGMENT_SECONDS, group_costs, segment_flops  # noqa: E402
from mmpl_core.model.config import WAN_CONFIGS  # noqa: E402
from mmpl_core.model.modules import build_random_model  # noqa: E402
from mmpl_core.pipeline import MMPLPipeline  # noqa: E402
from mmpl_core.plan import CFG_BRANCHES, GenerationSettings, Plan  # noqa: E402
from mmpl_core.sampling import SamplerConfig  # noqa: E402
from mmpl_core.schedule import (  # noqa: E402
    MODES, CostModel, ProcessPool, best_policy, build_graph, lower_bound, run_plan, simulate, start_aware_bound,
)
from mmpl_core.schedule.costs import SPLIT  # noqa: E402
from mmpl_core.schedule.graph import BRIDGE, DECODE  # noqa: E402
from mmpl_core.stitch import overlap_pixel_frames  # noqa: E402
from mmpl_core.text import HashedTextEncoder  # noqa: E402

PROMPT = "a red circle and a blue square bounce"


@dataclass(frozen=True)
class DemoEngine:
    """What each worker builds: the demo's DiT, exact latent codec and text encoder on its own layout, or, with
    `layout`, a DiT of the demo's shape with random weights on that layout (task times do not depend on weights)."""

    layout: str | None = None

    def build(self, device: str):
        if self.layout is None:
            return load_demo_pipeline("mmpl", device=device)[0]
        bundle = DemoBundle.load("mmpl")
        dit = build_random_model(WAN_CONFIGS["demo"], seed=0).to(device)
        return MMPLPipeline(dit, PCALatentSpace.load(bundle.codec).to(device), get_layout(self.layout),
                            HashedTextEncoder(dim=dit.text_embedding[0].weight.shape[1], text_len=bundle.text_len),
                            negative_prompt="", device=device, dtype=torch.float32)


CONFIGS = {
    "demo": ("the embedded demo model on its layout mmpl-t2v-13", DemoEngine()),
    "wan": ("random weights of the demo's shape on Wan2.1's layout wan-t2v", DemoEngine("wan-t2v")),
}
SAMPLER = SamplerConfig("unipc", 20, 3.0, 3.0)  # the demo's settings, 64×64


def settings_for(steps: int, mode: str = "throughput", cfg_branches: str = "batched") -> GenerationSettings:
    return GenerationSettings(sampler=replace(SAMPLER, steps=steps), handoff=MODES[mode], cfg_branches=cfg_branches)


def real_run(engine: DemoEngine, pipe, steps: int, segments: int, workers: int, *, mode: str, cfg_branches: str,
             policy: str | None):
    plan = pipe.new_plan([PROMPT], segments, settings_for(steps, mode, cfg_branches))
    pool = ProcessPool(engine, ["cpu"] * workers, threads=1)
    try:
        result = run_plan(plan, pool, pipe.prompt_fn(plan.settings.sampler), policy=policy)
    finally:
        pool.close()
    return result, result.simulated_makespan()


def setting_costs(batched: CostModel, split: CostModel, graph) -> CostModel:
    """Costs of `graph`'s CFG setting: batched tasks as measured batched; a shareable task's half as measured split,
    and on one device both halves one after the other."""
    out = CostModel(prior_units=dict(batched.prior_units), seconds=dict(batched.seconds))
    for task in graph.tasks:
        if task.splittable:
            half = split.seconds[task.cost_key + SPLIT]
            out.seconds[task.cost_key + SPLIT], out.seconds[task.cost_key] = half, 2 * half
    return out


def measure(name: str, opts) -> dict:
    engine = CONFIGS[name][1]
    pipe = engine.build("cpu")
    n, steps = opts.segments_real, opts.steps
    print(f"\n## {name}: {CONFIGS[name][0]}; real runs of {n} segments, {steps} steps, 64×64, worker processes "
          "with 1 torch thread each")
    run1, sim1 = real_run(engine, pipe, steps, n, 1, mode="throughput", cfg_branches="batched", policy=None)
    run2b, sim2b = real_run(engine, pipe, steps, n, 2, mode="throughput", cfg_branches="batched", policy=None)
    run2, sim2 = real_run(engine, pipe, steps, n, 2, mode="throughput", cfg_branches="split", policy="split-all")
    runm, simm = real_run(engine, pipe, steps, n, 1, mode="memory", cfg_branches="batched", policy=None)
    print("measured seconds per task, alone (1 worker):", _rounded(run1.costs.seconds))
    print("measured seconds per task, beside another (2 workers; the simulation's costs):",
          _rounded({**run2b.costs.seconds, **{k: v for k, v in run2.costs.seconds.items() if k.endswith(SPLIT)}}))
    for label, run, sim in (("1 worker, batched", run1, sim1), ("2 workers, batched", run2b, sim2b),
                            ("2 workers, split", run2, sim2), ("1 worker, memory mode", runm, simm)):
        print(f"  {label:<22} real {run.report.makespan:6.2f} s  simulated {sim:6.2f} s  "
              f"ratio {run.report.makespan / sim:.3f}  policy {run.report.policy}")
    overlap = overlap_pixel_frames(pipe.layout)  # pixel frames a segment shares with the one before
    for mode, run in (("throughput", run1), ("memory", runm)):
        frames = sum(len(v) - (overlap if k else 0) for k, v in run.videos.items())
        by_kind: dict[str, int] = {}
        for r in run.report.records:
            kind = r.task.split("[")[0]
            by_kind[kind] = max(by_kind.get(kind, 0), r.cache_bytes)
        print(f"  {mode:<10} mode: {frames} frames in {run.report.makespan:.2f} s = "
              f"{frames / run.report.makespan:.1f} frames/s on 1 worker; peak KV cache "
              f"{max(by_kind.values()) / 1e6:.3f} MB (per task kind, MB: "
              f"{ {k: round(v / 1e6, 3) for k, v in by_kind.items()} }); "
              f"peak RSS {max(run.report.peak_rss_bytes.values()) / 1e9:.2f} GB")

    figures = simulation_table(pipe.layout, steps, run2b.costs, run2.costs)
    return {
        **figures,
        "real_vs_sim_1w": round(run1.report.makespan / sim1, 4),
        "real_vs_sim_2w": round(run2.report.makespan / sim2, 4),
        "real_vs_sim_2w_batched": round(run2b.report.makespan / sim2b, 4),
        "planning_share": round(_planning_share(run1.costs), 3),
    }


def simulation_table(layout, steps: int, batched: CostModel, split: CostModel) -> dict:
    """Print the simulated table for both modes, 4 and 12 segments, 1–8 workers; return its summary figures."""
    rows, figures = [], {"ratio": {}, "start_ratio": {}, "speedup": {}}
    for mode in MODES:
        for segments in (4, 12):
            graphs = {cb: build_graph(Plan.new(layout, settings_for(steps, mode, cb), ["x"], segments, "fp"))
                      for cb in CFG_BRANCHES}
            costs = {cb: setting_costs(batched, split, g) for cb, g in graphs.items()}
            one = simulate(graphs["batched"], costs["batched"], 1).makespan  # one device, batched CFG: the baseline
            for workers in (1, 2, 4, 8):
                runs = {cb: best_policy(graphs[cb], costs[cb], workers, split=cb != "batched") for cb in CFG_BRANCHES}
                setting = min(CFG_BRANCHES, key=lambda cb: (round(runs[cb].makespan, 9), CFG_BRANCHES.index(cb)))
                chosen, shared = runs[setting], setting != "batched"
                bound = lower_bound(graphs[setting], costs[setting], workers, split=shared)
                start = start_aware_bound(graphs[setting], costs[setting], workers, split=shared)
                key = (mode, segments, workers)
                figures["ratio"][key] = chosen.makespan / bound
                figures["start_ratio"][key] = chosen.makespan / start
                figures["speedup"][key] = one / chosen.makespan
                others = ", ".join(f"{cb} {one / runs[cb].makespan:.2f}×" for cb in CFG_BRANCHES if cb != setting)
                rows.append(f"| {mode} | {segments} | {workers} | {setting}, {chosen.policy} | {chosen.makespan:.2f} | "
                            f"{bound:.2f} | {figures['ratio'][key]:.3f} | {start:.2f} | "
                            f"{figures['start_ratio'][key]:.3f} | {figures['speedup'][key]:.2f}× | {others} |")
    print("\n| mode | segments | workers | CFG setting, policy | simulated makespan (s) | lower bound (s) | ratio | "
          "start-aware bound (s) | ratio | speed-up | the other settings' speed-ups |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    throughput = [k for k in figures["ratio"] if k[0] == "throughput"]
    return {
        "max_ratio_to_bound": round(max(figures["ratio"][k] for k in throughput), 4),
        "max_ratio_to_start_aware_bound": round(max(figures["start_ratio"][k] for k in throughput), 4),
        "max_ratio_to_bound_memory_mode": round(max(v for k, v in figures["ratio"].items() if k[0] == "memory"), 4),
        "speedup_4w_12seg": round(figures["speedup"][("throughput", 12, 4)], 3),
        "speedup_8w_12seg": round(figures["speedup"][("throughput", 12, 8)], 3),
    }


def predicted(size: str = "14B", height: int = 480, width: int = 832, steps: int = 50) -> dict:
    """The same table for a real-size model on GPUs, from predicted costs (no GPU was measured): a denoising task
    takes time in proportion to its FLOPs (`mmpl_core.memory`: its steps plus one t=0 pass over the frames it sees),
    scaled so that a whole segment takes the authors' 7 min 7 s on one H100; one branch of a shared chunk is exactly
    half of it (batch 1: half the FLOPs; the exchanged chunk output, ~1 MB per step, is neglected); bridge and decode
    are assumed at 2 s and 15 s."""
    layout, cfg = get_layout("wan-t2v"), WAN_CONFIGS[size]
    per_step = {b: [c.flops_per_step for c in group_costs(cfg, layout, height, width, batch=b)] for b in (1, 2)}
    seconds_per_flop = AUTHORS_H100_SEGMENT_SECONDS / segment_flops(cfg, layout, height, width, steps)

    def seconds(groups: tuple[int, ...], batch: int) -> float:
        seen = {layout.group_of(f) for g in groups for f in layout.groups[g].sees}
        flops = sum(per_step[batch][g] * steps for g in groups) + sum(per_step[batch][g] for g in seen)
        return seconds_per_flop * flops

    batched, split = CostModel(seconds={BRIDGE: 2.0, DECODE: 15.0}), CostModel(seconds={BRIDGE: 2.0, DECODE: 15.0})
    for task in build_graph(Plan.new(layout, settings_for(steps, "throughput", "split"), ["x"], 2, "fp")).tasks:
        if task.groups:
            batched.seconds[task.cost_key] = seconds(task.groups, 2)
            split.seconds[task.cost_key + SPLIT] = seconds(task.groups, 1)
    print(f"\n## predicted: Wan2.1-{size} on H100s, {height}×{width}, {steps} steps, layout wan-t2v (simulation only)")
    print("predicted seconds per task:", _rounded({**batched.seconds, **split.seconds}))
    return {**simulation_table(layout, steps, batched, split), "planning_share": round(_planning_share(batched), 3)}


def _planning_share(costs: CostModel) -> float:
    """Share of a later segment's work (plan + populate) that its plan task takes, on one device."""
    plan = costs.seconds["plan:plan"]
    return plan / (plan + sum(v for k, v in costs.seconds.items() if k.startswith("populate:") and SPLIT not in k))


def _rounded(seconds: dict) -> dict:
    return {k: round(v, 3) for k, v in sorted(seconds.items())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments-real", type=int, default=6)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--configs", default="demo,wan", help=f"comma-separated, from {list(CONFIGS)}")
    p.add_argument("--no-predict", dest="predict", action="store_false", help="skip the predicted 14B GPU table")
    opts = p.parse_args()
    torch.set_num_threads(1)
    summaries = {}
    for name in opts.configs.split(","):
        if name not in CONFIGS:
            p.error(f"--configs: unknown configuration {name!r}; expected some of {list(CONFIGS)}")
        summaries[name] = measure(name, opts)
    if opts.predict:
        summaries["predicted_14B_h100"] = predicted()
    headline = summaries.get("wan") or next(iter(summaries.values()))
    keys = ("max_ratio_to_bound", "speedup_4w_12seg", "real_vs_sim_2w")
    print(json.dumps({**{k: headline[k] for k in keys}, **summaries}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
