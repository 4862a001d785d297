"""Worker pools the coordinator drives: in-process (sequential) and local worker processes, one per device.

A pool starts jobs on workers and reports events: ("done", worker, JobResult), ("error", worker, message) when a job
raised, ("died", worker, message) when a worker process is gone. Process workers are spawned (never forked, so CUDA
works), set their own torch thread count, and build their own model replica from an `EngineSpec`. Two workers sharing
a task exchange CFG branch outputs over a pipe between them, never through files.
"""
from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
import signal
import traceback
from typing import Iterator

import numpy as np
import torch

from .jobs import Engine, EngineSpec, Job

Event = tuple[str, int, object]


class InProcessPool:
    """One worker: the caller's own engine, running each job when the coordinator polls (the sequential executor)."""

    supports_split = False

    def __init__(self, engine: Engine, threads: int | None = None, on_step=None):
        self.engine, self.threads, self.on_step = engine, threads, on_step
        self.size, self.alive = 1, {0}
        self._pending: list[Job] = []

    def submit(self, worker: int, job: Job) -> None:
        self._pending.append(job)

    def poll(self, timeout: float | None = None) -> Iterator[Event]:
        while self._pending:
            job = self._pending.pop(0)
            previous = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                yield "done", 0, self.engine.run(job, on_step=self.on_step)
            except Exception:  # noqa: BLE001 — reported as the task's failure
                yield "error", 0, traceback.format_exc(limit=4)
            finally:
                torch.set_num_threads(previous)

    def kill(self, worker: int) -> None:
        raise RuntimeError("the in-process worker cannot be killed")

    def close(self) -> None:
        self._pending.clear()


class _PipeExchange:
    """One side of a CFG branch exchange over a duplex pipe (branch 0 sends first, so large tensors never deadlock)."""

    def __init__(self, conn, branch: int):
        self.conn, self.branch = conn, branch

    def swap(self, mine: torch.Tensor) -> torch.Tensor:
        payload = (tuple(mine.shape), str(mine.dtype).removeprefix("torch."), mine.contiguous().numpy().tobytes())
        if self.branch == 0:
            self.conn.send(payload)
            shape, dtype, data = self.conn.recv()
        else:
            shape, dtype, data = self.conn.recv()
            self.conn.send(payload)
        return torch.from_numpy(np.frombuffer(data, dtype=dtype).reshape(shape).copy())


def _worker_main(index: int, device: str, spec: EngineSpec, threads: int, jobs, events, conns) -> None:
    # Ctrl-C reaches every process of the terminal's group: the coordinator handles it and stops the workers, which
    # would otherwise each die with a traceback of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:
        engine = Engine(spec.build(device))
    except BaseException:  # noqa: BLE001 — the coordinator reports it
        events.put(("died", index, "could not build the engine:\n" + traceback.format_exc(limit=4)))
        return
    events.put(("ready", index, None))
    while True:
        data = jobs.get()
        if data is None:
            return
        job: Job = pickle.loads(data)
        exchange = _PipeExchange(conns[job.partner], job.branch) if job.partner is not None else None
        try:
            result = engine.run(job, exchange)
        except Exception:  # noqa: BLE001 — reported as the task's failure, the worker lives on
            events.put(("error", index, f"{job.task.name}: " + traceback.format_exc(limit=4)))
            continue
        events.put(("done", index, pickle.dumps(result)))


class ProcessPool:
    """One spawned worker process per device (e.g. ["cuda:0", "cuda:1"], or ["cpu", "cpu"] standing in for two)."""

    supports_split = True

    def __init__(self, spec: EngineSpec, devices: list[str], threads: int = 1, start_timeout: float = 600.0):
        if not devices:
            raise ValueError("a process pool needs at least one device")
        ctx = mp.get_context("spawn")
        self.size, self.devices = len(devices), list(devices)
        self._events = ctx.Queue()
        self._jobs = [ctx.Queue() for _ in devices]
        ends: list[dict[int, object]] = [{} for _ in devices]
        for i in range(self.size):
            for j in range(i + 1, self.size):
                ends[i][j], ends[j][i] = ctx.Pipe(duplex=True)
        self._procs = [
            ctx.Process(target=_worker_main, args=(i, d, spec, threads, self._jobs[i], self._events, ends[i]),
                        name=f"mmpl-worker-{i}-{d}", daemon=True)
            for i, d in enumerate(devices)
        ]
        for p in self._procs:
            p.start()
        for conns in ends:  # the workers hold their ends now; a dead worker's partner then sees the pipe close
            for c in conns.values():
                c.close()
        self.alive: set[int] = set()
        self._busy: set[int] = set()
        waiting = set(range(self.size))
        while waiting:
            try:
                kind, index, message = self._events.get(timeout=start_timeout)
            except queue.Empty:
                self.close()
                raise RuntimeError(f"workers {sorted(waiting)} did not start within {start_timeout:.0f} s") from None
            waiting.discard(index)
            if kind == "ready":
                self.alive.add(index)
            else:
                print(f"mmpl: worker {index} ({devices[index]}) failed to start: {message}")
        if not self.alive:
            self.close()
            raise RuntimeError("no worker could start")

    def pid(self, worker: int) -> int:
        return self._procs[worker].pid

    def exitcode(self, worker: int) -> int | None:
        """The worker process's exit code (negative: killed by that signal); None while it runs."""
        return self._procs[worker].exitcode

    @property
    def busy(self) -> frozenset[int]:
        """Workers handed a job whose result has not come back."""
        return frozenset(self._busy)

    def submit(self, worker: int, job: Job) -> None:
        self._busy.add(worker)
        self._jobs[worker].put(pickle.dumps(job))

    def poll(self, timeout: float | None = 0.2) -> Iterator[Event]:
        try:
            kind, index, payload = self._events.get(timeout=timeout)
        except queue.Empty:
            for w in sorted(self.alive):
                if not self._procs[w].is_alive():
                    self.alive.discard(w)
                    if w in self._busy:  # its task is lost with it
                        self._busy.discard(w)
                        yield "died", w, f"worker {w} ({self.devices[w]}) exited with code {self._procs[w].exitcode}"
            return
        self._busy.discard(index)
        yield kind, index, pickle.loads(payload) if kind == "done" else payload

    def kill(self, worker: int) -> None:
        self._procs[worker].kill()

    def close(self) -> None:
        """Stop every worker: idle ones finish cleanly, busy ones (an interrupted or failed run) are killed at once,
        since their results would be thrown away."""
        for w, (q, p) in enumerate(zip(self._jobs, self._procs)):
            if w in self._busy:
                p.kill()
            elif p.is_alive():
                try:
                    q.put(None)
                except (OSError, ValueError):
                    pass
        for p in self._procs:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
        # A job left in the queue of a worker that died would keep this process from exiting (the queue's feeder
        # thread waits to flush it): drop what is unsent.
        for q in (*self._jobs, self._events):
            q.cancel_join_thread()
            q.close()
