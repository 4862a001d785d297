"""The work of a long video as a task graph (data): what runs, on what it waits, and which tasks form the plan chain.

For each segment k: `plan[k]` (micro planning) → `bridge[k]` (its hand-off keyframes through the VAE into segment
k+1's first latents) → `plan[k+1]`; after `plan[k]`, one populate task per layout group still needed (`head[k]`, then
`tail[k]`, which sees the head), then `decode[k]`. The plan and bridge tasks form the plan chain, the graph's
critical spine. Which groups a segment needs follows the plan's handoff: with the midpoint handoff (memory mode) a
segment needs only its head. Graphs start from a plan's state, so a resumed run only holds the
tasks still to do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..layout import PLAN, POPULATE
from ..plan import Plan

BRIDGE, DECODE = "bridge", "decode"  # PLAN and POPULATE tasks run the layout phases of those names
# The scheduler's two modes (paper §3.3) and the plan handoff each one means.
MODES = {"throughput": "terminal", "memory": "midpoint"}


@dataclass(frozen=True)
class Task:
    """One unit of work. `groups`: the layout groups it denoises (plan and populate tasks). `chain`: on the plan
    chain. `cost_key`: what the cost model times it as (e.g. "plan:initial+plan" for a first T2V segment).
    `splittable`: its guided chunks evaluate the CFG branches apart (the plan's `cfg_branches`), so two devices may
    share it."""

    name: str
    kind: str
    segment: int
    deps: tuple[str, ...] = ()
    groups: tuple[int, ...] = ()
    cost_key: str = ""
    splittable: bool = False

    @property
    def chain(self) -> bool:
        return self.kind in (PLAN, BRIDGE)


@dataclass(frozen=True)
class TaskGraph:
    tasks: tuple[Task, ...]  # in a topological order
    mode: str
    num_segments: int

    def __post_init__(self):
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError("task names must be unique")
        seen: set[str] = set()
        for t in self.tasks:
            missing = [d for d in t.deps if d not in seen]
            if missing:
                raise ValueError(f"task {t.name} depends on {missing}, which do not come before it")
            seen.add(t.name)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, name: str) -> Task:
        return self.by_name[name]

    @property
    def by_name(self) -> dict[str, Task]:
        return {t.name: t for t in self.tasks}

    def successors(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {t.name: [] for t in self.tasks}
        for t in self.tasks:
            for d in t.deps:
                out[d].append(t.name)
        return out

    def denoising_steps(self, steps: int) -> dict[str, int]:
        """Task → the denoising steps it runs at `steps` per group (0 for bridge and decode): progress bar units."""
        return {t.name: steps * len(t.groups) for t in self.tasks}

    def describe(self) -> str:
        return "\n".join(f"{t.name:<12} ← {', '.join(t.deps) or '—'}" for t in self.tasks)


def mode_of(plan: Plan) -> str:
    return next(mode for mode, handoff in MODES.items() if handoff == plan.settings.handoff)


def build_graph(
    plan: Plan, *, decode: bool = True, segments: Sequence[int] | None = None, replan: bool = True
) -> TaskGraph:
    """The tasks that take `plan` from its current state to finished (and decoded) segments.

    Planning restarts at `plan.replan_start()` (the first segment not planned, or a locked, hand-edited one) and
    runs to the end, since each plan depends on the one before. `segments` limits populating and decoding.
    replan False takes the plan as it is (a locked segment's plan stays as it is, not re-chained): no planning
    tasks, for populating a reviewed plan; every segment it populates must be planned.
    """
    layout, count = plan.layout, len(plan)
    start = plan.replan_start() if replan else count
    wanted = range(count) if segments is None else sorted(set(segments))
    tasks: list[Task] = []
    for k in range(start, count):
        deps: tuple[str, ...] = ()
        if k > 0:
            bridge_deps = (f"plan[{k - 1}]",) if k - 1 >= start else ()
            tasks.append(Task(f"bridge[{k - 1}]", BRIDGE, k - 1, bridge_deps, cost_key=BRIDGE))
            deps = (f"bridge[{k - 1}]",)
        groups = _plan_groups(plan, k)
        key = "plan:" + "+".join(layout.groups[g].name for g in groups)
        tasks.append(Task(f"plan[{k}]", PLAN, k, deps, groups, key, plan.settings.splits_cfg(PLAN)))
    planned_here = {t.segment for t in tasks if t.kind == PLAN}
    for k in wanted:
        previous = f"plan[{k}]" if k in planned_here else None
        if k in planned_here or plan.status(k) != "populated":
            known = frozenset() if k in planned_here else plan.segments[k].latents.known
            for g in _populate_groups(plan, k, known):
                name = f"{layout.groups[g].name}[{k}]"
                tasks.append(Task(name, POPULATE, k, (previous,) if previous else (), (g,),
                                  f"populate:{layout.groups[g].name}", plan.settings.splits_cfg(POPULATE)))
                previous = name
        if decode:
            tasks.append(Task(f"decode[{k}]", DECODE, k, (previous,) if previous else (), cost_key=DECODE))
    return TaskGraph(tuple(_topological(tasks)), mode_of(plan), count)


def _plan_groups(plan: Plan, k: int) -> tuple[int, ...]:
    """Plan-phase groups segment k denoises: all of them for the first segment, all but the bridged context after."""
    layout = plan.layout
    supplied = set(range(layout.image_frames if k == 0 else layout.context_frames))
    return tuple(g for g in layout.plan_groups if not set(layout.groups[g].frames) <= supplied)


def _populate_groups(plan: Plan, k: int, known: frozenset[int]) -> tuple[int, ...]:
    layout, required = plan.layout, set(plan.required_frames(k))
    return tuple(
        g for g in layout.populate_groups
        if required & set(layout.groups[g].frames) and not set(layout.groups[g].frames) <= known
    )


def _topological(tasks: list[Task]) -> list[Task]:
    """Tasks in an order where dependencies come first (chain tasks as early as possible)."""
    done: set[str] = set()
    pending, ordered = list(tasks), []
    while pending:
        ready = [t for t in pending if set(t.deps) <= done]
        if not ready:
            raise ValueError(f"task graph has a cycle among {[t.name for t in pending]}")
        for t in ready:
            ordered.append(t)
            done.add(t.name)
        pending = [t for t in pending if t.name not in done]
    return ordered
