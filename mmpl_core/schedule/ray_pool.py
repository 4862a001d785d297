"""A Ray pool: one actor per GPU (or per CPU worker), on this machine or a cluster (`ray.init(address=...)`).

Needs the optional extra `distributed` (`pip install mmpl-long-video[distributed]`). Tasks are not split
across actors (that needs a per-step exchange between them); everything else matches the local process pool.
"""
from __future__ import annotations

import pickle
import traceback
from typing import Iterator

from .jobs import Engine, EngineSpec, Job


def _ray():
    try:
        import ray
    except ImportError as err:  # pragma: no cover — depends on the install
        raise RuntimeError("the Ray executor needs Ray: pip install 'mmpl-long-video[distributed]'") from err
    return ray


class _Actor:
    def __init__(self, spec: EngineSpec, device: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.engine = Engine(spec.build(device))

    def ready(self) -> bool:
        return True

    def pid(self) -> int:
        import os

        return os.getpid()

    def run(self, data: bytes) -> bytes:
        job: Job = pickle.loads(data)
        try:
            return pickle.dumps(("done", self.engine.run(job)))
        except Exception:  # noqa: BLE001 — the coordinator retries elsewhere
            return pickle.dumps(("error", f"{job.task.name}: " + traceback.format_exc(limit=4)))


class RayPool:
    supports_split = False

    def __init__(self, spec: EngineSpec, workers: int, *, address: str | None = None, gpus_per_worker: float = 0.0,
                 threads: int = 1, device: str | None = None):
        ray = _ray()
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(workers * threads, 1), include_dashboard=False, log_to_driver=False)
        self._owns_ray = not address
        device = device or ("cuda" if gpus_per_worker else "cpu")
        actor = ray.remote(num_gpus=gpus_per_worker, num_cpus=threads, max_restarts=0)(_Actor)
        self._actors = [actor.remote(spec, device, threads) for _ in range(workers)]
        ray.get([a.ready.remote() for a in self._actors])
        self.size, self.alive = workers, set(range(workers))
        self._futures: dict[object, int] = {}

    def pid(self, worker: int) -> int:
        return _ray().get(self._actors[worker].pid.remote())

    def submit(self, worker: int, job: Job) -> None:
        self._futures[self._actors[worker].run.remote(pickle.dumps(job))] = worker

    def poll(self, timeout: float | None = 0.2) -> Iterator[tuple[str, int, object]]:
        ray = _ray()
        if not self._futures:
            return
        done, _ = ray.wait(list(self._futures), num_returns=1, timeout=timeout)
        for ref in done:
            worker = self._futures.pop(ref)
            try:
                kind, payload = pickle.loads(ray.get(ref))
            except ray.exceptions.RayActorError as err:
                self.alive.discard(worker)
                yield "died", worker, f"Ray actor {worker} died: {err}"
                continue
            yield kind, worker, payload

    def kill(self, worker: int) -> None:
        _ray().kill(self._actors[worker])

    def close(self) -> None:
        ray = _ray()
        for a in self._actors:
            ray.kill(a)
        if self._owns_ray:
            ray.shutdown()
