"""What a worker runs for one task, and what it sends back. Workers hold an `Engine` (a model replica and a VAE);
jobs carry the little of the plan they need, and prompt embeddings encoded once by the coordinator."""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch

from ..chain import plan_one, segment_context
from ..pipeline import MMPLPipeline
from ..plan import Plan, SegmentPlan
from ..populate import decode_segment
from ..segment import BranchExchange, Prompt, populate_segment
from ..video_io import to_uint8_frames
from .graph import BRIDGE, DECODE, PLAN, POPULATE, Task


@dataclass
class Job:
    """task: what to run. plan: the plan with latents only on the segments the task reads. prompts: text → Prompt.
    context: a plan task's first latents [C, k, h, w] (from the bridge, or the I2V image latent).
    branch: for a task shared by two workers, the CFG branch this worker evaluates (0 or 1)."""

    task: Task
    plan: Plan
    prompts: dict[str, Prompt]
    context: torch.Tensor | None = None
    partner: int | None = None
    branch: int | None = None


@dataclass
class JobResult:
    """segment: the task's segment after a plan or populate task; context: a bridge's output [C, 2, h, w];
    video: a decode's kept pixel frames, uint8 [T, H, W, 3]. cache_bytes: the KV cache at its fullest."""

    task: str
    seconds: float
    segment: SegmentPlan | None = None
    context: torch.Tensor | None = None
    video: np.ndarray | None = None
    cache_bytes: int = 0
    peak_rss_bytes: int = 0


class EngineSpec(Protocol):
    """How a worker builds its engine on its device (picklable: it travels to worker processes and Ray actors)."""

    def build(self, device: str) -> MMPLPipeline: ...


def sparse_plan(plan: Plan, keep) -> Plan:
    """`plan` with latents only on the segments in `keep` (jobs carry no more than they need)."""
    keep = set(keep)
    return replace(plan, segments=tuple(s if k in keep else replace(s, latents=None) for k, s in enumerate(plan.segments)))


class Engine:
    """A worker's model replica, VAE and samplers (`pipe`), running jobs."""

    def __init__(self, pipe: MMPLPipeline):
        self.pipe = pipe

    def run(self, job: Job, exchange: BranchExchange | None = None, on_step=None) -> JobResult:
        start = time.perf_counter()
        task, plan, k = job.task, job.plan, job.task.segment
        sampler = self.pipe.sampler(plan.settings.sampler)
        out = JobResult(task.name, 0.0)
        if task.kind == PLAN:
            out.segment = plan_one(plan, k, sampler, job.prompts.__getitem__, job.context, on_step=on_step,
                                   exchange=exchange, vae=self.pipe.vae)
            out.cache_bytes = _plan_cache_bytes(sampler)
        elif task.kind == BRIDGE:
            out.context = segment_context(plan, k + 1, self.pipe.vae)
        elif task.kind == POPULATE:
            seg = plan.segments[k]
            run = populate_segment(
                sampler, plan.layout, job.prompts[seg.prompt], seg.latents, seed=seg.seed, segment=k,
                boundary_weight=plan.settings.boundary_weight, on_step=on_step, groups=task.groups,
                split_cfg=plan.settings.splits_cfg(POPULATE), exchange=exchange, kv_dtype=plan.settings.kv_dtype,
                noise_init=plan.settings.noise_init,
            )
            out.segment, out.cache_bytes = replace(seg, latents=run.result), run.cache_bytes
        elif task.kind == DECODE:
            out.video = to_uint8_frames(decode_segment(plan, k, self.pipe.vae))
        else:
            raise ValueError(f"unknown task kind {task.kind!r}")
        out.seconds = time.perf_counter() - start
        out.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return out


def _plan_cache_bytes(sampler) -> int:
    return getattr(sampler, "last_cache_bytes", 0)
