"""`--workers / --devices / --ray / --mode / --cfg-branches / --threads`: how `mmpl generate` spreads its work."""
from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass

from ..plan import CFG_BRANCHES
from .common import CLIError


def add_schedule_args(p: argparse.ArgumentParser, workers: bool = True) -> None:
    """--mode and --cfg-branches (they shape the plan); with `workers`, also where the work runs."""
    g = p.add_argument_group("scheduling (plan chain and populating in parallel)")
    g.add_argument("--mode", choices=("throughput", "memory"), default="throughput",
                   help="throughput: the next segment starts from the terminal keyframes (every frame kept); memory: "
                        "from the midpoint keyframes (a segment's deepest-context tail is skipped: lower peak memory, "
                        "more segments per second of video)")
    g.add_argument("--cfg-branches", choices=CFG_BRANCHES, default="batched",
                   help="split-plan: plan chunks evaluate the two CFG branches apart, so two idle devices can share "
                        "one (shortens the plan chain with 3+ devices); split: every guided chunk; results differ in "
                        "the last bits from 'batched'")
    if not workers:
        return
    g.add_argument("--workers", type=int, help="worker processes standing in for devices (on CPU), e.g. 2")
    g.add_argument("--devices", help="one worker per device, e.g. cuda:0,cuda:1")
    g.add_argument("--ray", metavar="ADDRESS", help="run workers as Ray actors: 'local' or a cluster address")
    g.add_argument("--threads", type=int,
                   help="torch threads per CPU worker (CPU results are bit-identical across worker counts at equal "
                        "--threads; default 1 with --workers/--ray, torch's default otherwise)")
    g.add_argument("--max-retries", type=int, default=2, help="retries of a task whose worker failed")


@dataclass
class PipelineSpec:
    """Builds the same pipeline as the command, on another device (what worker processes and Ray actors run)."""

    args: argparse.Namespace

    def __post_init__(self):  # the command's handler is a closure: workers need only the arguments
        self.args = argparse.Namespace(**{k: v for k, v in vars(self.args).items() if not callable(v)})

    def build(self, device: str):
        from .common import build_pipeline

        args = copy.copy(self.args)
        args.device = device
        return build_pipeline(args)


def uses_workers(args) -> bool:
    return bool(args.workers or args.devices or args.ray)


def worker_devices(args) -> list[str]:
    if sum(bool(x) for x in (args.workers, args.devices)) > 1:
        raise CLIError("give either --workers N or --devices LIST, not both")
    if args.devices:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        if not devices:
            raise CLIError(f"--devices {args.devices!r}: expected a comma-separated list such as cuda:0,cuda:1")
        return devices
    return [args.device] * (args.workers or 1)


def check_schedule_args(args) -> None:
    """Refuse bad scheduling arguments before any work starts."""
    for name in ("workers", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CLIError(f"--{name} must be >= 1, got {value}")
    if args.max_retries < 0:
        raise CLIError(f"--max-retries must be >= 0, got {args.max_retries}")
    worker_devices(args)


def make_pool(args, pipe, on_step=None):
    """The executor for the arguments: in-process, local worker processes, or Ray actors."""
    from ..schedule import InProcessPool, ProcessPool
    from ..schedule.jobs import Engine

    check_schedule_args(args)
    threads = args.threads or (1 if uses_workers(args) else None)
    if args.ray:
        from ..schedule.ray_pool import RayPool

        devices = worker_devices(args)
        gpus = 1.0 if devices[0].startswith("cuda") else 0.0
        try:
            return RayPool(PipelineSpec(args), len(devices), address=None if args.ray == "local" else args.ray,
                           gpus_per_worker=gpus, threads=threads or 1, device="cuda" if gpus else "cpu")
        except RuntimeError as err:
            raise CLIError(f"--ray: {err}") from err
    if not uses_workers(args):
        return InProcessPool(Engine(pipe), threads=threads, on_step=on_step)
    return ProcessPool(PipelineSpec(args), worker_devices(args), threads=threads or 1)
