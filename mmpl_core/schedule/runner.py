"""The coordinator: runs a plan's task graph on a worker pool, in dependency order, by the dispatch policy.

Finished work goes into the plan at once and `on_segment` (e.g. saving the plan folder) runs after every plan and
populate task, so a failure or an interrupt loses at most the tasks in flight and a rerun resumes. A task whose
worker raised or died is retried on another worker, up to `max_retries` times; the error that finally surfaces
names the task and its segment.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..plan import Plan
from .costs import CostModel
from .graph import BRIDGE, DECODE, PLAN, POPULATE, Task, TaskGraph, build_graph
from .jobs import Job, JobResult, sparse_plan
from .policy import Dispatcher
from .simulate import best_policy, simulate


class ScheduleError(RuntimeError):
    """A task failed on every attempt; finished segments are already saved (`on_segment`)."""


@dataclass
class TaskRecord:
    task: str
    workers: tuple[int, ...]
    start: float
    end: float
    cache_bytes: int = 0


@dataclass
class RunReport:
    """What happened: the policy, every task's workers and times (seconds from the start), peak memory per worker."""

    policy: str
    workers: int
    makespan: float = 0.0
    records: list[TaskRecord] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)
    peak_rss_bytes: dict[int, int] = field(default_factory=dict)
    peak_cache_bytes: dict[int, int] = field(default_factory=dict)


@dataclass
class RunResult:
    plan: Plan
    videos: dict[int, np.ndarray]  # segment → its kept pixel frames, uint8 [T, H, W, 3]
    report: RunReport
    costs: CostModel  # the priors, updated with every task time this run measured
    graph: TaskGraph
    split: bool  # shareable tasks could be shared between two workers

    def simulated_makespan(self) -> float:
        """The simulator's makespan for this run's graph, worker count and policy, with the task times it measured:
        what the real makespan is judged against."""
        if not len(self.graph):
            return 0.0
        return simulate(self.graph, self.costs, self.report.workers, self.report.policy, self.split).makespan


def run_plan(
    plan: Plan,
    pool,
    prompt_of: Callable,
    *,
    costs: CostModel | None = None,
    policy: str | None = None,
    decode: bool = True,
    segments=None,
    replan: bool = True,
    max_retries: int = 2,
    on_segment: Callable[[int, Plan], None] | None = None,
    on_task: Callable[[Task, JobResult], None] | None = None,
    on_start: Callable[[Task, tuple[int, ...]], None] | None = None,
) -> RunResult:
    """Plan, populate and decode `plan` on `pool`. prompt_of: text → Prompt (each prompt is encoded once, here).

    `costs` (measured or prior) choose the dispatch policy by simulation unless `policy` is given, and take in
    every measured task time. Raises ScheduleError after `max_retries` failed retries of one task.
    `on_start(task, workers)` runs when a task is handed out, `on_task(task, result)` when it finished.
    replan False: only populate (and decode) planned segments, also locked ones (see `build_graph`).
    """
    graph = build_graph(plan, decode=decode, segments=segments, replan=replan)
    costs = costs or CostModel.for_graph(graph, plan.layout, plan.settings.sampler.steps)
    split = any(t.splittable for t in graph.tasks) and getattr(pool, "supports_split", False)
    policy = policy or best_policy(graph, costs, len(pool.alive), split).policy
    runner = _Coordinator(graph, plan, pool, prompt_of, costs, Dispatcher(graph, costs, pool.size, policy, split),
                          max_retries, on_segment, on_task, on_start)
    return runner.run()


class _Coordinator:
    def __init__(self, graph: TaskGraph, plan: Plan, pool, prompt_of, costs, dispatcher, max_retries, on_segment,
                 on_task, on_start):
        self.graph, self.plan, self.pool, self.prompt_of, self.costs = graph, plan, pool, prompt_of, costs
        self.dispatcher, self.max_retries, self.on_segment, self.on_task = dispatcher, max_retries, on_segment, on_task
        self.on_start = on_start
        self.contexts: dict[int, object] = {}
        self.videos: dict[int, np.ndarray] = {}
        self.done: set[str] = set()
        self.running: dict[str, dict] = {}  # task → {"workers": (...), "start": t, "pending": set(workers)}
        self.attempts: dict[str, int] = {}
        self.avoid: dict[str, set[int]] = {}
        self.report = RunReport(dispatcher.policy, pool.size)

    def run(self) -> RunResult:
        self.t0 = time.perf_counter()
        chain_total = sum(t.chain for t in self.graph.tasks)
        try:
            while len(self.done) < len(self.graph):
                self._dispatch(chain_total)
                if not self.running:
                    raise ScheduleError("no worker is left to run the remaining tasks "
                                        f"({sorted(t.name for t in self.graph.tasks if t.name not in self.done)[:5]} …)")
                for kind, worker, payload in self.pool.poll(0.2):
                    self._event(kind, worker, payload)
        finally:
            self.report.makespan = time.perf_counter() - self.t0
        return RunResult(self.plan, self.videos, self.report, self.costs, self.graph, self.dispatcher.split)

    # --- dispatch ----------------------------------------------------------------------------------------------
    def _dispatch(self, chain_total: int) -> None:
        busy = {w for r in self.running.values() for w in r["workers"]}
        idle = [w for w in sorted(self.pool.alive) if w not in busy]
        ready = [t for t in self.graph.tasks
                 if t.name not in self.done and t.name not in self.running and all(d in self.done for d in t.deps)]
        chain_left = sum(t.chain for t in self.graph.tasks if t.name in self.done) < chain_total
        for task in ready:
            if task.kind == POPULATE and self._already_known(task):
                self.done.add(task.name)  # a re-planned segment kept these frames
        ready = [t for t in ready if t.name not in self.done]
        assigned = self.dispatcher.assign(ready, idle, chain_left)
        taken = {w for _, workers in assigned for w in workers}
        deferred = []
        for task, workers in assigned:
            avoid = self.avoid.get(task.name, set())
            if set(workers) & avoid:  # it failed there before: another idle worker, or wait for one to free up
                free = [w for w in idle if w not in avoid and w not in taken]
                if len(free) >= len(workers):
                    workers = tuple(free[: len(workers)])
                    taken.update(workers)
                elif len(self.pool.alive - avoid) >= len(workers):
                    deferred.append((task, workers))
                    continue
            self._start(task, workers)
        if deferred and not self.running:  # nothing else would ever free a better worker: try again where it failed
            self._start(*deferred[0])

    def _already_known(self, task: Task) -> bool:
        seg = self.plan.segments[task.segment]
        frames = self.plan.layout.frames_of(task.groups)
        return seg.latents is not None and set(frames) <= seg.latents.known

    def _start(self, task: Task, workers: tuple[int, ...]) -> None:
        k, plan = task.segment, self.plan
        keep = {k} | ({0} if task.kind == BRIDGE else plan.segments_read_by_plan(k) if task.kind == PLAN else set())
        prompts = {plan.segments[k].prompt: self.prompt_of(plan.segments[k].prompt)}
        context = None
        if task.kind == PLAN:
            context = plan.image_latent if k == 0 else self.contexts[k]
        job = Job(task, sparse_plan(plan, keep), prompts, context)
        self.running[task.name] = {"workers": workers, "start": time.perf_counter() - self.t0, "pending": set(workers),
                                   "result": None}
        if self.on_start is not None:
            self.on_start(task, workers)
        if len(workers) == 2:
            first, second = workers
            self.pool.submit(first, replace(job, partner=second, branch=0))
            self.pool.submit(second, replace(job, partner=first, branch=1))
        else:
            self.pool.submit(workers[0], job)

    # --- events ------------------------------------------------------------------------------------------------
    def _task_of(self, worker: int) -> str | None:
        return next((name for name, r in self.running.items() if worker in r["pending"]), None)

    def _event(self, kind: str, worker: int, payload) -> None:
        name = payload.task if kind == "done" else self._task_of(worker)
        if name is None or name not in self.running:
            return  # the other half of a split task that already failed
        entry = self.running[name]
        if kind == "done":
            entry["pending"].discard(worker)
            if entry["result"] is None or worker == entry["workers"][0]:
                entry["result"] = payload
            self.report.peak_rss_bytes[worker] = max(self.report.peak_rss_bytes.get(worker, 0), payload.peak_rss_bytes)
            self.report.peak_cache_bytes[worker] = max(self.report.peak_cache_bytes.get(worker, 0), payload.cache_bytes)
            if not entry["pending"]:
                self._finish(self.graph[name], entry)
            return
        self._fail(self.graph[name], entry, worker, kind, str(payload))

    def _finish(self, task: Task, entry: dict) -> None:
        result: JobResult = entry["result"]
        del self.running[task.name]
        self.done.add(task.name)
        end = time.perf_counter() - self.t0
        self.report.records.append(TaskRecord(task.name, entry["workers"], entry["start"], end, result.cache_bytes))
        self.costs.measure(task, result.seconds, split=len(entry["workers"]) == 2)
        k = task.segment
        if task.kind in (PLAN, POPULATE):
            self.plan = self.plan.with_segment(k, result.segment)
            if self.on_segment is not None:
                self.on_segment(k, self.plan)
        elif task.kind == BRIDGE:
            self.contexts[k + 1] = result.context
        elif task.kind == DECODE:
            self.videos[k] = result.video
        if self.on_task is not None:
            self.on_task(task, result)

    def _fail(self, task: Task, entry: dict, worker: int, kind: str, message: str) -> None:
        del self.running[task.name]
        if len(entry["workers"]) == 2:  # the partner of a failed half may be stuck on the exchange: stop it
            for other in set(entry["workers"]) - {worker}:
                if other in self.pool.alive and other in entry["pending"]:
                    self.pool.kill(other)
        self.attempts[task.name] = self.attempts.get(task.name, 0) + 1
        self.avoid.setdefault(task.name, set()).add(worker)
        where = self._worker_name(worker)
        self.report.retries.append(f"{task.name} on {where}: {kind}")
        if self.attempts[task.name] > self.max_retries:
            raise ScheduleError(
                f"task {task.name} (segment {task.segment + 1}) failed {self.attempts[task.name]} times; last on "
                f"{where}: {message.strip().splitlines()[-1] if message.strip() else kind}. Finished segments "
                "are saved; run again to resume."
            )

    def _worker_name(self, worker: int) -> str:
        devices = getattr(self.pool, "devices", None)
        return f"worker {worker} ({devices[worker]})" if devices else f"worker {worker}"
