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
    """Longest dependency path; with `split`, splittable tasks count at their shared-by-two-devices duration."""
    return _longest_path(graph, costs, split)[0]


def _longest_path(graph: TaskGraph, costs: CostModel, split: bool = False) -> tuple[float, list[str]]:
    finish: dict[str, float] = {}
    previous: dict[str, str | None] = {}
    for t in graph.tasks:
        before = max(t.deps, key=lambda d: finish[d], default=None)
        previous[t.name] = before
        finish[t.name] = costs.cost(t, split=split and t.splittable) + (finish[before] if before else 0.0)
    if not finish:
        return 0.0, []
    name: str | None = max(finish, key=finish.get)
    length, path = finish[name], []
    while name is not None:
        path.append(name)
        name = previous[name]
    return length, path[::-1]


def total_work(graph: TaskGraph, costs: CostModel) -> float:
    """Device-seconds of the graph when no task is split (splitting only adds work)."""
    return sum(costs.cost(t) for t in graph.tasks)


def lower_bound(graph: TaskGraph, costs: CostModel, workers: int, split: bool = False) -> float:
    """max(total work / workers, critical path): no schedule on `workers` identical devices can beat it.

    With splitting, a schedule that splits m tasks does at least m × (least extra work of a split) more work, the
    unsplit critical path still takes at least its length minus the m largest savings of its own tasks, and no path
    is shorter than with every task split; the bound is the minimum over m, so it holds whatever a schedule splits."""
    work = total_work(graph, costs)
    path, on_path = _longest_path(graph, costs)
    if not (split and workers >= 2):
        return max(work / workers, path)
    splittable = [t for t in graph.tasks if t.splittable]
    by_name = graph.by_name
    extra = max(0.0, min((2 * costs.cost(t, split=True) - costs.cost(t) for t in splittable), default=0.0))
    savings = sorted((costs.cost(by_name[n]) - costs.cost(by_name[n], split=True) for n in on_path
                      if by_name[n].splittable), reverse=True)
    floor = critical_path(graph, costs, split=True)
    best = max(work / workers, path)
    for m in range(1, len(splittable) + 1):
        best = min(best, max((work + m * extra) / workers, path - sum(savings[:m]), floor))
    return best


def start_aware_bound(graph: TaskGraph, costs: CostModel, workers: int, split: bool = False) -> float:
    """`lower_bound`, tightened by the graph's start: when one task (a new video's first plan) gates every other,
    only the device(s) running it are busy until it ends, so no schedule beats its duration plus the rest of the
    work over all workers."""
    bound = lower_bound(graph, costs, workers, split)
    sources = [t for t in graph.tasks if not t.deps]
    if len(sources) != 1:
        return bound
    first, shared = sources[0], split and workers >= 2

    def least_work(task) -> float:
        if shared and task.splittable:
            return min(costs.cost(task), 2 * costs.cost(task, split=True))
        return costs.cost(task)

    duration = costs.cost(first)
    if shared and first.splittable:
        duration = min(duration, costs.cost(first, split=True))
    return max(bound, duration + sum(least_work(t) for t in graph.tasks if t is not first) / workers)


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
