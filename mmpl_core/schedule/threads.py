"""Populating planned segments in parallel: one worker per device, each with its own segment sampler (model replica).

Once a segment's plan exists its populating depends on nothing else, and noise is seeded by (seed, segment, group),
so the result is bit-identical whichever worker populates which segment. Workers are threads: the forward releases
the GIL, and a CUDA device per thread needs no process plumbing.
"""
from __future__ import annotations

import contextvars
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

from ..chain import PromptFn, SegmentCallback
from ..plan import Plan
from ..populate import populate_one, segments_to_populate
from ..segment import SegmentSampler, StepCallback


@dataclass(frozen=True)
class PopulateWorker:
    """One device's share of the work: a sampler over the model replica on that device, and its prompt encoder."""

    name: str
    sampler: SegmentSampler
    prompt_of: PromptFn


class PopulateError(RuntimeError):
    """A worker failed; the message names the worker and the segment."""


def populate_parallel(
    plan: Plan,
    workers: Sequence[PopulateWorker],
    *,
    segments: Sequence[int] | None = None,
    on_step: StepCallback | None = None,
    on_segment: SegmentCallback | None = None,
    on_start: Callable[[int, str], None] | None = None,
    passthrough: tuple[type[BaseException], ...] = (),
) -> Plan:
    """Populate `segments` (default: all not yet populated) on `workers`; each takes the next segment as it frees up.

    `on_start(k, worker_name)` runs when a worker takes segment k (e.g. to show it as being populated).
    `on_segment(k, plan)` runs (serialised) after every finished segment with the plan so far, so a failure or an
    interrupt keeps every finished segment. The first error stops the other workers after their current segment
    and is raised as a PopulateError naming worker and segment; exceptions of a `passthrough` type (a front end's
    interrupt) and non-Exception ones (KeyboardInterrupt) are re-raised unchanged.
    """
    if not workers:
        raise ValueError("populate_parallel needs at least one worker")
    todo = segments_to_populate(plan, segments)
    pending: queue.Queue[int] = queue.Queue()
    for k in todo:
        pending.put(k)
    lock, stop, errors = threading.Lock(), threading.Event(), []
    state = {"plan": plan}

    def work(worker: PopulateWorker) -> None:
        while not stop.is_set():
            try:
                k = pending.get_nowait()
            except queue.Empty:
                return
            try:
                if on_start is not None:
                    on_start(k, worker.name)
                done = populate_one(plan, k, worker.sampler, worker.prompt_of, on_step)
            except BaseException as err:  # noqa: BLE001 — handed to the caller's thread below
                errors.append((worker.name, k, err))
                stop.set()
                return
            with lock:
                state["plan"] = state["plan"].with_segment(k, done)
                if on_segment is not None:
                    on_segment(k, state["plan"])

    # Each thread runs in a copy of the caller's context, so a host's context variables (e.g. which node is running)
    # stay visible to callbacks.
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(work, w), name=f"mmpl-populate-{w.name}")
        for w in workers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        name, k, err = errors[0]
        if not isinstance(err, Exception) or isinstance(err, passthrough):
            raise err
        raise PopulateError(f"worker {name} failed on segment {k}: {type(err).__name__}: {err}") from err
    return state["plan"]
