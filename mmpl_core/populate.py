"""Content populating of planned segments, and decoding finished segments into one stitched video."""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator, Sequence

import torch

from .chain import PromptFn, SegmentCallback
from .plan import Plan
from .segment import SegmentSampler, StepCallback, populate_segment
from .stitch import stitch, stitch_stream
from .vae import WanVAE


def populate_plan(
    plan: Plan,
    sampler: SegmentSampler,
    prompt_of: PromptFn,
    *,
    segments: Sequence[int] | None = None,
    on_step: StepCallback | None = None,
    on_segment: SegmentCallback | None = None,
) -> Plan:
    """Populate the given segments (default: all); populated segments are skipped, so this also resumes.

    `on_segment(k, plan)` runs after each finished segment, so an interrupt keeps every finished segment.
    """
    todo = range(len(plan)) if segments is None else segments
    for k in todo:
        seg = plan.segments[k]
        status = seg.status(plan.layout)
        if status == "populated":
            continue
        if status == "empty":
            raise ValueError(f"segment {k} is not planned; plan it before populating")
        run = populate_segment(
            sampler, plan.layout, prompt_of(seg.prompt), seg.latents, seed=seg.seed, segment=k,
            boundary_weight=plan.settings.boundary_weight, on_step=on_step,
        )
        plan = plan.with_segment(k, replace(seg, latents=run.result))
        if on_segment is not None:
            on_segment(k, plan)
    return plan


@torch.no_grad()
def decode_segments(plan: Plan, vae: WanVAE) -> Iterator[torch.Tensor]:
    """Decode populated segments one at a time → [3, T, H, W] in [-1, 1] each (memory stays one segment)."""
    for k, seg in enumerate(plan.segments):
        if seg.status(plan.layout) != "populated":
            raise ValueError(f"segment {k} is not populated ({seg.status(plan.layout)})")
        yield vae.decode(seg.latents.latents[None].to(vae.device))[0].float().cpu()


def decode_stream(plan: Plan, vae: WanVAE) -> Iterator[torch.Tensor]:
    """The stitched video's new frames segment by segment ([3, T', H, W] each)."""
    return stitch_stream(decode_segments(plan, vae), plan.layout)


def decode_video(plan: Plan, vae: WanVAE) -> torch.Tensor:
    """The whole stitched video [3, 81 + 76·(S−1), H, W] (for Wan layouts)."""
    return stitch(decode_segments(plan, vae), plan.layout)
