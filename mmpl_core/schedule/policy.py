"""Which worker takes which ready task: one dispatch rule shared by the real executors and the simulator.

Priorities: plan-chain tasks first (the chain is the critical spine: nothing else may delay it), then the longest
remaining path (bottom level, from the cost model), later segments first among equals (so the last segment, which
ends the video, is not left for last). Policies differ in how they protect and shorten the chain:

- "greedy": every idle worker takes the best ready task.
- "greedy-split": as greedy, and a plan or populate task also takes a second idle worker (sharing its CFG
  branches) whenever there are more idle workers than ready tasks, i.e. when that worker would otherwise wait.
- "split-all": every plan task runs split across two workers, waiting for a second one if need be (pays off when
  the chain is the bottleneck even with few workers).
- "chain-1": one worker is reserved for the plan chain while the chain lasts (the authors' pipelining, done right).
- "chain-2-split": two workers are reserved for the chain and run every plan task split across both.
- "<policy>+eager" (for the three above): a populate task also takes a second idle worker whenever one is free.
  With cfg_branches "split" a shared task does the same work as one run on one device (both branches, in turn),
  so sharing costs nothing but the exchange and yields shorter tasks that pack better at the end of a run.

`best_policy` simulates the candidates with the cost model and picks the shortest makespan: that is the adaptive
part, and it uses measured per-task times as soon as a run has them.
"""
from __future__ import annotations

from typing import Sequence

from .costs import CostModel
from .graph import Task, TaskGraph

EAGER = "+eager"
_SHARING = ("greedy-split", "split-all", "chain-2-split")
POLICIES = ("greedy", "greedy-split", "split-all", "chain-1", "chain-2-split", *(p + EAGER for p in _SHARING))
SPLITTING = frozenset(p for p in POLICIES if p.startswith(_SHARING))


def bottom_levels(graph: TaskGraph, costs: CostModel) -> dict[str, float]:
    """Longest cost path from each task to the end of the graph, the task included."""
    successors = graph.successors()
    levels: dict[str, float] = {}
    for task in reversed(graph.tasks):
        levels[task.name] = costs.cost(task) + max((levels[s] for s in successors[task.name]), default=0.0)
    return levels


class Dispatcher:
    def __init__(self, graph: TaskGraph, costs: CostModel, workers: int, policy: str = "greedy", split: bool = False):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if workers < 1:
            raise ValueError(f"need at least one worker, got {workers}")
        self.graph, self.costs, self.workers = graph, costs, workers
        self.split = split and workers >= 2 and policy in SPLITTING
        self.policy, self.eager = policy, policy.endswith(EAGER)
        reserve = {"chain-1": 1, "chain-2-split": 2}.get(self.base_policy, 0)
        self.reserved = tuple(range(reserve)) if workers > reserve else ()
        self.levels = bottom_levels(graph, costs)
        self.last_segment = max((t.segment for t in graph.tasks), default=0)

    @property
    def base_policy(self) -> str:
        return self.policy.removesuffix(EAGER)

    def order(self, ready: Sequence[Task]) -> list[Task]:
        return sorted(ready, key=lambda t: (not t.chain, -self.levels[t.name], -t.segment, t.name))

    def assign(self, ready: Sequence[Task], idle: Sequence[int], chain_left: bool) -> list[tuple[Task, tuple[int, ...]]]:
        """Start tasks from `ready` on `idle` workers: [(task, workers)], two workers for a split task."""
        idle = sorted(idle)
        out: list[tuple[Task, tuple[int, ...]]] = []
        tasks = self.order(ready)
        reserved = set(self.reserved) if chain_left else set()
        for i, task in enumerate(tasks):
            eligible = [w for w in idle if (w in reserved) == task.chain] if reserved else list(idle)
            if not eligible:
                continue
            take = 1
            policy = self.base_policy
            forced = task.chain and policy in ("chain-2-split", "split-all")  # plan tasks always split
            # Once the chain is done, the last segment's populate tasks end the critical path: split them too.
            forced |= not chain_left and task.segment == self.last_segment and policy != "greedy-split"
            forced |= self.eager and not task.chain
            if task.splittable and self.split and len(eligible) >= 2:
                others_waiting = len([t for t in tasks[i + 1:] if not reserved or t.chain == task.chain])
                if forced or len(eligible) > 1 + others_waiting:
                    take = 2
            if forced and task.chain and task.splittable and self.split and len(eligible) < 2 and (
                policy == "split-all" or (policy == "chain-2-split" and reserved)
            ):
                if policy == "split-all":
                    idle = []  # hold the idle worker for this plan task rather than let it start something long
                continue  # wait for a second worker
            chosen = tuple(eligible[:take])
            out.append((task, chosen))
            idle = [w for w in idle if w not in chosen]
        return out
