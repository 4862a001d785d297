"""Adaptive workload scheduling: task graphs of both modes, the simulator's bounds, and executors that agree bit for
bit (in-process, local worker processes, Ray), survive a killed worker and leave an interrupted run resumable."""
from __future__ import annotations

import dataclasses
import signal
import time

import pytest
import torch

from mmpl_core.cli import build_parser
from mmpl_core.cli.common import build_pipeline
from mmpl_core.cli.schedule_args import PipelineSpec
from mmpl_core.layout import get_layout
from mmpl_core.plan import GenerationSettings, Plan
from mmpl_core.plan_store import PlanStore
from mmpl_core.sampling import SamplerConfig
from mmpl_core.schedule import (
    POLICIES, CostModel, Engine, InProcessPool, ProcessPool, ScheduleError, best_policy, build_graph, critical_path,
    lower_bound, run_plan, simulate, start_aware_bound, total_work,
)
from mmpl_core.schedule.graph import POPULATE

SAMPLER = SamplerConfig("unipc", 2, 3.0, 3.0)


def settings(mode: str = "throughput", cfg_branches: str = "batched") -> GenerationSettings:
    return GenerationSettings(sampler=SAMPLER, handoff={"throughput": "terminal", "memory": "midpoint"}[mode],
                              cfg_branches=cfg_branches)


def test_graph_throughput_mode():
    plan = Plan.new(get_layout("mmpl-t2v-13"), settings(), ["x"], 3, "fp")
    graph = build_graph(plan)
    kinds = [t.name.split("[")[0] for t in graph.tasks]
    assert sorted(kinds) == sorted(["plan"] * 3 + ["bridge"] * 2 + ["head"] * 3 + ["tail"] * 3 + ["decode"] * 3)
    assert graph["plan[1]"].deps == ("bridge[0]",) and graph["bridge[0]"].deps == ("plan[0]",)
    assert graph["head[2]"].deps == ("plan[2]",) and graph["tail[2]"].deps == ("head[2]",)
    assert graph["decode[1]"].deps == ("tail[1]",)
    assert graph["plan[0]"].cost_key == "plan:initial+plan" and graph["plan[1]"].cost_key == "plan:plan"
    assert [t.name for t in graph.tasks if t.chain] == ["plan[0]", "bridge[0]", "plan[1]", "bridge[1]", "plan[2]"]


def test_graph_memory_mode_skips_tails():
    plan = Plan.new(get_layout("mmpl-t2v-13"), settings("memory"), ["x"], 3, "fp")
    graph = build_graph(plan)
    assert graph.mode == "memory"
    assert [t.name for t in graph.tasks if t.kind == POPULATE] == ["head[0]", "head[1]", "head[2]"]
    assert graph["decode[0]"].deps == ("head[0]",)
    with pytest.raises(ValueError, match="midpoint"):
        Plan.new(get_layout("mmpl-t2v-9"), settings("memory"), ["x"], 2, "fp")  # no midpoint pair to hand off


def test_graph_resumes_from_the_plan_state():
    layout = get_layout("mmpl-t2v-13")
    plan = Plan.new(layout, settings(), ["x"], 3, "fp")
    full = torch.zeros(16, 13, 8, 8)
    from mmpl_core.segment import SegmentLatents

    done = SegmentLatents.empty(16, 13, 8, 8).with_frames(range(13), full)
    planned = SegmentLatents.empty(16, 13, 8, 8).with_frames(layout.keyframes, full[:, list(layout.keyframes)])
    plan = plan.with_segment(0, dataclasses.replace(plan.segments[0], latents=done))
    plan = plan.with_segment(1, dataclasses.replace(plan.segments[1], latents=planned))
    names = [t.name for t in build_graph(plan).tasks]
    assert names[:2] == ["decode[0]", "bridge[1]"] or set(names) == {
        "decode[0]", "head[1]", "tail[1]", "decode[1]", "bridge[1]", "plan[2]", "head[2]", "tail[2]", "decode[2]"}
    assert build_graph(plan)["bridge[1]"].deps == ()  # segment 1's plan exists already


def test_cfg_setting_decides_which_tasks_two_devices_may_share():
    for cfg_branches, plan_shared, populate_shared in (("batched", False, False), ("split-plan", True, False),
                                                       ("split", True, True)):
        graph = build_graph(Plan.new(get_layout("mmpl-t2v-13"), settings("throughput", cfg_branches), ["x"], 2, "fp"))
        assert {t.splittable for t in graph.tasks if t.kind == "plan"} == {plan_shared}
        assert {t.splittable for t in graph.tasks if t.kind == POPULATE} == {populate_shared}
        assert not any(t.splittable for t in graph.tasks if t.kind in ("bridge", "decode"))


@pytest.mark.parametrize("mode,cfg_branches", [("throughput", "split"), ("memory", "split"),
                                               ("throughput", "split-plan")])
def test_simulator_respects_the_lower_bound(mode, cfg_branches):
    plan = Plan.new(get_layout("mmpl-t2v-13"), settings(mode, cfg_branches), ["x"], 6, "fp")
    graph = build_graph(plan)
    costs = CostModel.for_graph(graph, plan.layout, 20)
    assert simulate(graph, costs, 1).makespan == pytest.approx(total_work(graph, costs))
    assert critical_path(graph, costs, split=True) < critical_path(graph, costs)
    for workers in (1, 2, 3, 4, 8):
        bound = lower_bound(graph, costs, workers, split=True)
        start_bound = start_aware_bound(graph, costs, workers, split=True)
        assert start_bound >= bound
        for policy in POLICIES:
            schedule = simulate(graph, costs, workers, policy, split=True)
            assert schedule.makespan >= start_bound - 1e-9, (policy, workers)
            busy = sorted((s.start, s.end, w) for s in schedule.slots for w in s.workers)
            for w in range(workers):  # a worker never runs two tasks at once
                spans = [(a, b) for a, b, x in busy if x == w]
                assert all(b1 <= a2 + 1e-9 for (_, b1), (a2, _) in zip(spans, spans[1:]))
        assert best_policy(graph, costs, workers, split=True).makespan <= simulate(graph, costs, workers).makespan


# --- executors on the demo model ----------------------------------------------------------------------------------

ARGS = ["generate", "--prompt", "a red circle bounces", "--out", "unused.mp4", "--steps", "2"]


@pytest.fixture(scope="module")
def demo():
    args = build_parser().parse_args(ARGS)
    return args, build_pipeline(args)


def _run_sequential(pipe, plan, **kw):
    return run_plan(plan, InProcessPool(Engine(pipe), threads=1), pipe.prompt_fn(plan.settings.sampler), **kw)


def _same(a, b) -> bool:
    return all(
        x.latents.known == y.latents.known and torch.equal(x.latents.latents.nan_to_num(0), y.latents.latents.nan_to_num(0))
        for x, y in zip(a.plan.segments, b.plan.segments)
    ) and a.videos.keys() == b.videos.keys() and all((a.videos[k] == b.videos[k]).all() for k in a.videos)


@pytest.mark.parametrize("mode,cfg_branches,policy", [
    ("throughput", "batched", "chain-1"), ("memory", "split", "split-all+eager"),
    ("throughput", "split-plan", "greedy-split"),
])
def test_local_workers_match_sequential_bit_for_bit(demo, mode, cfg_branches, policy):
    args, pipe = demo
    plan = pipe.new_plan(["a red circle bounces"], 3, settings(mode, cfg_branches))
    sequential = _run_sequential(pipe, plan)
    assert sequential.plan.statuses() == ["populated"] * 3
    pool = ProcessPool(PipelineSpec(args), ["cpu", "cpu"], threads=1)
    try:
        parallel = run_plan(plan, pool, pipe.prompt_fn(plan.settings.sampler), policy=policy)
    finally:
        pool.close()
    assert _same(sequential, parallel)
    used = {w for r in parallel.report.records for w in r.workers}
    assert used == {0, 1}
    if cfg_branches != "batched":  # tasks really were shared by both workers (plan[0] at least: nothing else is ready)
        assert any(len(r.workers) == 2 for r in parallel.report.records if r.task.startswith("plan"))
    lengths = [len(sequential.videos[k]) for k in range(3)]
    assert lengths == ([49, 49, 49] if mode == "throughput" else [29, 29, 29])


def test_ray_workers_match_sequential(demo):
    pytest.importorskip("ray")
    from mmpl_core.schedule.ray_pool import RayPool

    args, pipe = demo
    plan = pipe.new_plan(["a red circle bounces"], 3, settings())
    sequential = _run_sequential(pipe, plan)
    pool = RayPool(PipelineSpec(args), 2, threads=1)
    try:
        distributed = run_plan(plan, pool, pipe.prompt_fn(plan.settings.sampler))
    finally:
        pool.close()
    assert _same(sequential, distributed)


class _KillingPool(ProcessPool):
    """Kills worker 1 as soon as it has been handed its first populate task, so the task is lost with it."""

    killed: str | None = None

    def submit(self, worker, job):
        super().submit(worker, job)
        if worker == 1 and job.task.kind == POPULATE and self.killed is None:
            self.kill(worker)
            self.killed = job.task.name


def test_killed_worker_task_is_retried_and_output_unchanged(demo, tmp_path):
    args, pipe = demo
    plan = pipe.new_plan(["a red circle bounces"], 3, settings())
    sequential = _run_sequential(pipe, plan)
    pool = _KillingPool(PipelineSpec(args), ["cpu", "cpu"], threads=1)
    store = PlanStore(tmp_path / "p")
    try:
        result = run_plan(plan, pool, pipe.prompt_fn(plan.settings.sampler), policy="chain-1",
                          on_segment=lambda k, p: store.save(p))
    finally:
        pool.close()
    assert pool.killed is not None and any(r.startswith(pool.killed) and "died" in r for r in result.report.retries)
    assert 1 not in pool.alive
    assert _same(sequential, result)
    assert store.load().statuses() == ["populated"] * 3


class _FailingEngine(Engine):
    def run(self, job, exchange=None, on_step=None):
        if job.task.name == "tail[1]":
            raise RuntimeError("out of memory (injected)")
        return super().run(job, exchange, on_step)


def test_failing_task_names_segment_and_keeps_finished_work(demo, tmp_path):
    _, pipe = demo
    plan = pipe.new_plan(["a red circle bounces"], 3, settings())
    store = PlanStore(tmp_path / "p")
    with pytest.raises(ScheduleError, match=r"tail\[1\] \(segment 2\) failed 3 times.*out of memory"):
        run_plan(plan, InProcessPool(_FailingEngine(pipe), threads=1), pipe.prompt_fn(plan.settings.sampler),
                 on_segment=lambda k, p: store.save(p), policy="greedy")
    saved = store.load()
    assert saved.statuses()[1] == "planned" and "populated" in saved.statuses()


def test_interrupt_leaves_a_resumable_plan_folder(demo, tmp_path):
    _, pipe = demo
    plan = pipe.new_plan(["a red circle bounces"], 3, settings())
    reference = _run_sequential(pipe, plan)
    store, steps = PlanStore(tmp_path / "p"), [0]

    def interrupt_midway():
        steps[0] += 1
        if steps[0] == 14:
            raise KeyboardInterrupt

    pool = InProcessPool(Engine(pipe), threads=1, on_step=interrupt_midway)
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, pool, pipe.prompt_fn(plan.settings.sampler), on_segment=lambda k, p: store.save(p))
    saved = store.load()
    assert "empty" in saved.statuses() or "planned" in saved.statuses()
    resumed = _run_sequential(pipe, saved, on_segment=lambda k, p: store.save(p))
    assert _same(reference, resumed)


def test_interrupt_stops_worker_processes_at_once_and_the_run_resumes(demo, tmp_path):
    args, pipe = demo
    plan = pipe.new_plan(["a red circle bounces"], 3, settings())
    reference = _run_sequential(pipe, plan)
    store = PlanStore(tmp_path / "p")
    pool = ProcessPool(PipelineSpec(args), ["cpu", "cpu"], threads=1)
    interrupted_busy: list[frozenset] = []

    def interrupt_while_the_other_worker_runs(task, _result):
        if task.segment >= 1 and pool.busy:  # Ctrl-C lands in the coordinator while a worker is mid-task
            interrupted_busy.append(pool.busy)
            raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            run_plan(plan, pool, pipe.prompt_fn(plan.settings.sampler), policy="chain-1",
                     on_segment=lambda k, p: store.save(p), on_task=interrupt_while_the_other_worker_runs)
    finally:
        start = time.perf_counter()
        pool.close()
        stopped_in = time.perf_counter() - start
    codes = {w: pool.exitcode(w) for w in range(2)}
    assert interrupted_busy and None not in codes.values()
    # a busy worker is killed rather than left to finish its task; an idle one exits cleanly
    assert all(codes[w] == -signal.SIGKILL for w in interrupted_busy[0]), codes
    assert all(codes[w] == 0 for w in set(codes) - interrupted_busy[0]), codes
    assert stopped_in < 5, f"workers took {stopped_in:.1f} s to stop"
    resumed = _run_sequential(pipe, store.load(), on_segment=lambda k, p: store.save(p))
    assert _same(reference, resumed)


def test_cli_generate_with_workers_in_memory_mode(tmp_path):
    from mmpl_core.cli import main
    from mmpl_core.stitch import stitched_frame_count
    from mmpl_core.video_io import count_mp4_frames

    out = tmp_path / "v.mp4"
    base = ["generate", "--prompt", "a red circle", "--segments", "3", "--steps", "2", "--out", str(out)]
    assert main(base + ["--workers", "2", "--mode", "memory"]) == 0
    assert count_mp4_frames(out) == stitched_frame_count(get_layout("mmpl-t2v-13"), 3, "midpoint") == 77
    with pytest.raises(SystemExit, match="--workers must be >= 1"):
        main(base + ["--workers", "0"])
    with pytest.raises(SystemExit, match="either --workers N or --devices"):
        main(base + ["--workers", "2", "--devices", "cpu,cpu"])
