"""Replay a task graph on N simulated workers with the cost model: makespan, timeline, and the lower bound."""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from .costs import CostModel
from .graph import TaskGraph
from .policy import POLICIES, SPLITTING, Dispatcher


@dataclass(frozen=True)
class Slot:
    task: str
    workers: tuple[int, ...]
    start: float
    end: float


@dataclass
class Schedule:
    makespan: float
    policy: str
    workers: int
    slots: list[Slot] = field(default_factory=list)

    def busy_seconds(self) -> float:
        return sum((s.end - s.start) * len(s.workers) for s in self.slots)


def critical_path(graph: TaskGraph, costs: CostModel, split: bool = False) -> float:
    """Longest dependency path; with `split`, plan tasks count at their shared-by-two-devices duration."""
    finish: dict[str, float] = {}
    for t in graph.tasks:
        own = costs.cost(t, split=split and t.splittable)
        finish[t.name] = own + max((finish[d] for d in t.deps), default=0.0)
    return max(finish.values(), default=0.0)


def total_work(graph: TaskGraph, costs: CostModel) -> float:
    """Device-seconds of the graph when no task is split (splitting only adds work)."""
    return sum(costs.cost(t) for t in graph.tasks)


def lower_bound(graph: TaskGraph, costs: CostModel, workers: int, split: bool = False) -> float:
    """max(total work / workers, critical path): no schedule on `workers` identical devices can beat it.

    With splitting, a schedule that splits m plan tasks does at least m × (least extra work of a split) more work,
    and its critical path is at best the unsplit one minus the m largest savings; the bound is the minimum of
    max(work_m / workers, path_m) over m, so it holds whatever a schedule splits."""
    work, path = total_work(graph, costs), critical_path(graph, costs)
    if not (split and workers >= 2):
        return max(work / workers, path)
    plans = [t for t in graph.tasks if t.splittable]
    extra = min((2 * costs.cost(t, split=True) - costs.cost(t) for t in plans), default=0.0)
    savings = sorted((costs.cost(t) - costs.cost(t, split=True) for t in plans), reverse=True)
    best = max(work / workers, path)
    for m in range(1, len(plans) + 1):
        best = min(best, max((work + m * max(extra, 0.0)) / workers, path - sum(savings[:m])))
    return best


def simulate(graph: TaskGraph, costs: CostModel, workers: int, policy: str = "greedy", split: bool = False) -> Schedule:
    """Event-driven replay of the dispatch rule (`Dispatcher`) with each task taking its cost-model duration."""
    dispatcher = Dispatcher(graph, costs, workers, policy, split)
    by_name, done, started = graph.by_name, set(), set()
    idle, clock, running, schedule = list(range(workers)), 0.0, [], Schedule(0.0, policy, workers)
    chain_total = sum(t.chain for t in graph.tasks)
    chain_done = 0
    while len(done) < len(graph):
        ready = [t for t in graph.tasks if t.name not in started and all(d in done for d in t.deps)]
        for task, chosen in dispatcher.assign(ready, idle, chain_done < chain_total):
            duration = costs.cost(task, split=len(chosen) == 2)
            heapq.heappush(running, (clock + duration, task.name, chosen))
            schedule.slots.append(Slot(task.name, chosen, clock, clock + duration))
            started.add(task.name)
            idle = [w for w in idle if w not in chosen]
        if not running:
            raise RuntimeError(f"simulation stalled with {len(graph) - len(done)} tasks left (policy {policy})")
        clock, name, chosen = heapq.heappop(running)
        done.add(name)
        chain_done += by_name[name].chain
        idle.extend(chosen)
        while running and running[0][0] == clock:  # everything ending now frees its workers together
            _, name, chosen = heapq.heappop(running)
            done.add(name)
            chain_done += by_name[name].chain
            idle.extend(chosen)
    schedule.makespan = clock
    return schedule


def best_policy(graph: TaskGraph, costs: CostModel, workers: int, split: bool = False) -> Schedule:
    """The candidate policy with the shortest simulated makespan (ties: the simplest, in `POLICIES` order)."""
    candidates = [p for p in POLICIES if split or p not in SPLITTING]
    schedules = [simulate(graph, costs, workers, p, split) for p in candidates]
    return min(schedules, key=lambda s: (round(s.makespan, 9), candidates.index(s.policy)))
