"""Per-task costs: measured seconds per task kind (and per device), with priors from the work a task does.

The cost model feeds the scheduler's priorities and the simulator. It starts from priors proportional to the
attention work of each task's groups and replaces them with measured means as tasks finish, so a second run on the
same machine (or the same run, as it goes) schedules from real figures.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..layout import SegmentLayout
from .graph import BRIDGE, DECODE, Task, TaskGraph

SPLIT = "/split"  # suffix of the cost key of one device's half of a task shared by two devices
# Priors for the tasks without a denoising loop, in units of one denoised frame-step; and the share of a guided
# batch-2 forward that one batch-1 branch costs (measured on CPU for the demo model: 0.55–0.6).
_BRIDGE_UNITS, _DECODE_UNITS, _SPLIT_SHARE = 4.0, 6.0, 0.6


@dataclass
class CostModel:
    """seconds[cost_key] → mean measured seconds; unmeasured keys fall back to `prior_units × seconds_per_unit`."""

    prior_units: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_graph(cls, graph: TaskGraph, layout: SegmentLayout, steps: int) -> "CostModel":
        """Priors for every task of `graph`: a denoised group costs steps × frames × (frames + seen frames); a task
        whose CFG branches run apart costs two branches on one device, one when shared."""
        units: dict[str, float] = {BRIDGE: _BRIDGE_UNITS, DECODE: _DECODE_UNITS}
        for task in graph.tasks:
            if task.groups:
                work = sum(steps * len(layout.groups[g].frames) * (len(layout.groups[g].frames) + len(layout.groups[g].sees))
                           for g in task.groups) / layout.num_frames
                units[task.cost_key + SPLIT] = work * _SPLIT_SHARE
                units[task.cost_key] = 2 * work * _SPLIT_SHARE if task.splittable else work
        return cls(prior_units=units)

    def _seconds_per_unit(self) -> float:
        measured = [(self.seconds[k], self.prior_units[k]) for k in self.seconds if self.prior_units.get(k)]
        if not measured:
            return 1.0
        return sum(s for s, _ in measured) / sum(u for _, u in measured)

    def key(self, task: Task, split: bool = False) -> str:
        return task.cost_key + (SPLIT if split else "")

    def cost(self, task: Task, split: bool = False) -> float:
        key = self.key(task, split)
        if key in self.seconds:
            return self.seconds[key]
        share = self.split_share()
        if split and share is not None and task.cost_key in self.seconds:
            return self.seconds[task.cost_key] * share  # this task's own time, at the share splits measure elsewhere
        if key not in self.prior_units:
            raise KeyError(f"no cost for task {task.name} ({key})")
        return self.prior_units[key] * self._seconds_per_unit()

    def split_share(self) -> float | None:
        """Mean of (one device's half of a split task) / (the task unsplit) over keys measured both ways."""
        pairs = [(self.seconds[k], self.seconds[k.removesuffix(SPLIT)]) for k in self.seconds
                 if k.endswith(SPLIT) and k.removesuffix(SPLIT) in self.seconds]
        return sum(half / whole for half, whole in pairs) / len(pairs) if pairs else None

    def measure(self, task: Task, seconds: float, split: bool = False) -> None:
        """Fold one measured duration into the mean of its cost key."""
        key = self.key(task, split)
        n = self.counts.get(key, 0)
        self.seconds[key] = (self.seconds.get(key, 0.0) * n + seconds) / (n + 1)
        self.counts[key] = n + 1

    def to_json(self) -> dict:
        return {"prior_units": self.prior_units, "seconds": self.seconds, "counts": self.counts}

    @classmethod
    def from_json(cls, data: dict) -> "CostModel":
        return cls(dict(data.get("prior_units", {})), dict(data.get("seconds", {})), dict(data.get("counts", {})))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))
