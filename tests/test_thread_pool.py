"""The thread executor (one model replica per device inside one process, as ComfyUI runs it): bit for bit the same
as sequential running for every mode and CFG setting, shared tasks over in-memory exchanges, retries of a failing
device with the device and segment named, and a host's cancel that stops every thread and leaves a resumable plan."""
from __future__ import annotations

import copy
import threading

import pytest
import torch

from mmpl_core.pipeline import MMPLPipeline
from mmpl_core.plan_store import PlanStore
from mmpl_core.schedule import Engine, ScheduleError, run_plan
from mmpl_core.schedule.thread_pool import ThreadPool

from test_schedule import _run_sequential, _same, demo, settings  # noqa: F401 — shared fixtures

PROMPT = "a red circle bounces"


def replicas(pipe: MMPLPipeline, count: int) -> list[Engine]:
    """One engine per "device": the pipeline itself, then pipelines over deep copies of its model."""
    engines = [Engine(pipe)]
    for _ in range(count - 1):
        engines.append(Engine(MMPLPipeline(copy.deepcopy(pipe.model), pipe.vae, pipe.layout, pipe.text_encoder,
                                           negative_prompt=pipe.negative_prompt, device=pipe.device, dtype=pipe.dtype)))
    return engines


def run_threads(pipe, plan, engines, **kw):
    pool = ThreadPool(engines, ["cpu"] * len(engines), torch_threads=1,  # as the sequential reference runs
                      **{k: kw.pop(k) for k in ("on_step", "fatal") if k in kw})
    try:
        return run_plan(plan, pool, pipe.prompt_fn(plan.settings.sampler), **kw), pool
    finally:
        pool.close()


@pytest.mark.parametrize("mode,cfg_branches,policy", [
    ("throughput", "batched", "chain-1"), ("throughput", "split-plan", "greedy-split"),
    ("memory", "split", "split-all+eager"),
])
def test_threads_match_sequential_bit_for_bit(demo, mode, cfg_branches, policy):
    _, pipe = demo
    plan = pipe.new_plan([PROMPT], 3, settings(mode, cfg_branches))
    sequential = _run_sequential(pipe, plan)
    parallel, _ = run_threads(pipe, plan, replicas(pipe, 2), policy=policy)
    assert _same(sequential, parallel)
    assert {w for r in parallel.report.records for w in r.workers} == {0, 1}
    if cfg_branches != "batched":  # a shared plan task really ran its two CFG branches on the two threads
        assert any(len(r.workers) == 2 for r in parallel.report.records if r.task.startswith("plan"))


class _FailingEngine(Engine):
    """An engine whose device cannot run populate tasks (e.g. out of memory)."""

    def run(self, job, exchange=None, on_step=None):
        if job.task.kind == "populate":
            raise RuntimeError("CUDA out of memory (injected)")
        return super().run(job, exchange, on_step)


def test_a_failing_device_has_its_task_retried_on_another(demo):
    _, pipe = demo
    plan = pipe.new_plan([PROMPT], 2, settings())
    sequential = _run_sequential(pipe, plan)
    good, bad = replicas(pipe, 2)
    result, pool = run_threads(pipe, plan, [good, _FailingEngine(bad.pipe)], policy="greedy")
    assert result.report.retries and all("worker 1 (cpu)" in r for r in result.report.retries)
    assert _same(sequential, result)


def test_a_task_failing_everywhere_names_device_and_segment(demo, tmp_path):
    _, pipe = demo
    plan = pipe.new_plan([PROMPT], 2, settings())
    store = PlanStore(tmp_path / "p")
    engines = [_FailingEngine(e.pipe) for e in replicas(pipe, 2)]
    with pytest.raises(ScheduleError, match=r"\(segment \d\) failed 3 times; last on worker \d \(cpu\): .*out of memory"):
        run_threads(pipe, plan, engines, on_segment=lambda k, p: store.save(p))
    assert store.load().statuses() == ["planned", "planned"]  # the plans survive


class HostCancel(Exception):
    """A host's cancel (ComfyUI's InterruptProcessingException): ends the run, is never retried."""


def test_a_host_cancel_stops_every_thread_and_the_run_resumes(demo, tmp_path):
    _, pipe = demo
    plan = pipe.new_plan([PROMPT], 3, settings())
    reference = _run_sequential(pipe, plan)
    store, steps, lock = PlanStore(tmp_path / "p"), [0], threading.Lock()

    def cancel_midway():  # one thread sees the host's flag (which ComfyUI clears as it raises)
        with lock:
            steps[0] += 1
            if steps[0] == 20:
                raise HostCancel

    with pytest.raises(HostCancel):
        run_threads(pipe, plan, replicas(pipe, 2), on_step=cancel_midway, fatal=(HostCancel,), policy="greedy",
                    on_segment=lambda k, p: store.save(p))
    after = steps[0]
    assert after < 20 + 4, "the other thread stopped at its next step"
    saved = store.load()
    assert "populated" not in saved.statuses() or saved.statuses() != ["populated"] * 3
    resumed = _run_sequential(pipe, saved, on_segment=lambda k, p: store.save(p))
    assert _same(reference, resumed)


def test_populating_a_reviewed_plan_keeps_locked_segments_as_they_are(demo):
    """A plan with a hand-locked segment (Keyframe Editor) is populated as it is: no planning task, no bridge."""
    _, pipe = demo
    planned = _run_sequential(pipe, pipe.new_plan([PROMPT], 2, settings()), segments=[], decode=False).plan
    locked = planned.lock(1)
    result, _ = run_threads(pipe, locked, replicas(pipe, 1), decode=False, replan=False)
    assert {r.task.split("[")[0] for r in result.report.records} == {"head", "tail"}
    assert result.plan.statuses() == ["populated", "populated"]
    for k in (0, 1):
        assert torch.equal(result.plan.segments[k].latents.latents[:, list(planned.layout.keyframes)],
                           planned.segments[k].latents.latents[:, list(planned.layout.keyframes)])
