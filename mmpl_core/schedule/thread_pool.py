"""Worker threads inside the caller's process, one per device, each running jobs on its own engine (model replica):
the executor for hosts whose models live in their own process and memory manager (ComfyUI). Same protocol as the
other pools (`submit` / `poll` events); two threads sharing a task swap CFG branch outputs through in-memory queues.

The forward releases the GIL, so devices run in parallel. `stop()` (also on `close()`) makes every thread give up
at its next denoising step; an exception of a `fatal` type (a host's cancel) ends the run at once instead of being
retried on another worker.
"""
from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
import traceback
from typing import Callable, Iterator, Sequence

import torch

from .jobs import Engine, Job

Event = tuple[str, int, object]
EXCHANGE_POLL_S = 0.1


class Stopped(RuntimeError):
    """The pool was stopped (the run is over or cancelled) while this thread was working."""


class _QueueExchange:
    """One side of a CFG branch exchange between two threads of the pool."""

    def __init__(self, mine: queue.Queue, theirs: queue.Queue, branch: int, stopped: Callable[[], bool]):
        self.mine, self.theirs, self.branch, self.stopped = mine, theirs, branch, stopped

    def swap(self, tensor: torch.Tensor) -> torch.Tensor:
        self.theirs.put(tensor.clone())
        while True:
            if self.stopped():
                raise Stopped("the partner of a shared task was stopped")
            try:
                return self.mine.get(timeout=EXCHANGE_POLL_S)
            except queue.Empty:
                continue


class ThreadPool:
    """Threads over `engines` (one per device, e.g. replicas on "cuda:0", "cuda:1"); `names` label them in errors.

    on_step: called after every denoising step (progress, a host's interrupt check); of a task shared by two threads,
        only the thread of branch 0 reports.
    thread_context: a context manager factory each thread runs its jobs in (e.g. ``torch.inference_mode``).
    fatal: exception types that end the run (reported as a "fatal" event) rather than failing one task.
    torch_threads: torch's (process-wide) CPU thread count while the pool lives, restored on `close`; on the CPU
        the count changes float rounding, so runs that must agree bit for bit use the same one.
    """

    supports_split = True

    def __init__(
        self,
        engines: Sequence[Engine],
        names: Sequence[str],
        *,
        on_step: Callable[[], None] | None = None,
        thread_context: Callable[[], contextlib.AbstractContextManager] | None = None,
        fatal: tuple[type[BaseException], ...] = (),
        torch_threads: int | None = None,
    ):
        if not engines or len(engines) != len(names):
            raise ValueError(f"need one name per engine, got {len(engines)} engines and {len(names)} names")
        self.size, self.devices = len(engines), list(names)
        self.alive: set[int] = set(range(self.size))
        self._busy: set[int] = set()
        self._events: queue.Queue[Event] = queue.Queue()
        self._jobs: list[queue.Queue] = [queue.Queue() for _ in engines]
        self._inbox: dict[tuple[int, int], queue.Queue] = {}  # (receiver, sender) → branch outputs
        self._stop = threading.Event()
        self._retired: set[int] = set()
        self._on_step, self._fatal = on_step, fatal
        self._context = thread_context or contextlib.nullcontext
        self._previous_threads = torch.get_num_threads()
        if torch_threads:
            torch.set_num_threads(torch_threads)
        # Threads run in copies of the caller's context: a host's context variables (which node runs) stay visible.
        self._threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(self._work, i, engine), daemon=True,
                             name=f"mmpl-{name}-{i}")
            for i, (engine, name) in enumerate(zip(engines, names))
        ]
        for t in self._threads:
            t.start()

    # --- worker side ---------------------------------------------------------------------------------------------
    def _step(self, worker: int, job: Job) -> None:
        if self._stop.is_set() or worker in self._retired:
            raise Stopped(f"worker {worker} ({self.devices[worker]}) was stopped")
        if self._on_step is not None and job.branch in (None, 0):  # a shared task's steps count once
            self._on_step()

    def _exchange(self, worker: int, job: Job) -> _QueueExchange | None:
        if job.partner is None:
            return None
        mine = self._inbox.setdefault((worker, job.partner), queue.Queue())
        theirs = self._inbox.setdefault((job.partner, worker), queue.Queue())
        return _QueueExchange(mine, theirs, job.branch, lambda: self._stop.is_set() or worker in self._retired)

    def _work(self, worker: int, engine: Engine) -> None:
        try:
            device = torch.device(self.devices[worker])
        except RuntimeError:  # a label, not a device name
            device = None
        if device is not None and device.type == "cuda":
            torch.cuda.set_device(device)  # the current device is per thread: allocations land on the worker's own
        with self._context():
            while True:
                job = self._jobs[worker].get()
                if job is None or self._stop.is_set():
                    return
                try:
                    result = engine.run(job, self._exchange(worker, job), on_step=lambda: self._step(worker, job))
                except Stopped:
                    self._events.put(("stopped", worker, job.task.name))
                except self._fatal as err:
                    self._events.put(("fatal", worker, err))
                except Exception:  # noqa: BLE001 — the task's failure: the coordinator retries it elsewhere
                    self._events.put(("error", worker, f"{job.task.name} on {self.devices[worker]}: "
                                      + traceback.format_exc(limit=4)))
                else:
                    self._events.put(("done", worker, result))

    # --- coordinator side ----------------------------------------------------------------------------------------
    @property
    def busy(self) -> frozenset[int]:
        return frozenset(self._busy)

    def submit(self, worker: int, job: Job) -> None:
        if worker not in self.alive:
            raise ValueError(f"worker {worker} ({self.devices[worker]}) is not alive")
        self._busy.add(worker)
        self._jobs[worker].put(job)

    def poll(self, timeout: float | None = 0.2) -> Iterator[Event]:
        try:
            kind, worker, payload = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        self._busy.discard(worker)
        if kind == "fatal":
            raise payload
        if kind == "stopped":
            if worker in self._retired:  # a partner stopped by `kill`: its task is being retried
                yield "died", worker, f"worker {worker} ({self.devices[worker]}) was stopped"
            return
        yield kind, worker, payload

    def kill(self, worker: int) -> None:
        """Threads cannot be killed: the worker gives up at its next step (or exchange) and takes no more jobs."""
        self._retired.add(worker)
        self.alive.discard(worker)

    def stop(self) -> None:
        """Every thread gives up at its next denoising step."""
        self._stop.set()

    def close(self, timeout: float = 60.0) -> None:
        self.stop()
        for q in self._jobs:
            q.put(None)
        for t in self._threads:
            t.join(timeout=timeout)
        torch.set_num_threads(self._previous_threads)
