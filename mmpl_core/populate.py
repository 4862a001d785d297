"""Content populating of planned segments, and decoding finished segments into one stitched video."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Iterator, Sequence

import torch

from .chain import PromptFn, SegmentCallback
from .layout import POPULATE
from .plan import Plan, SegmentPlan
from .segment import SegmentSampler, StepCallback, populate_segment
from .stitch import stitch, stitch_stream
from .vae import WanVAE


def segments_to_populate(plan: Plan, segments: Sequence[int] | None = None) -> list[int]:
    """The given segments (default: all) that still need populating; an unplanned one is an error before any work."""
    todo = [k for k in (range(len(plan)) if segments is None else segments) if plan.status(k) != "populated"]
    empty = [k for k in todo if plan.status(k) == "empty"]
    if empty:
        raise ValueError(f"segment {empty[0]} is not planned; plan it before populating")
    return todo


def populate_one(plan: Plan, k: int, sampler: SegmentSampler, prompt_of: PromptFn, on_step=None) -> SegmentPlan:
    """Segment k of `plan`, populated (the same result on any sampler over the same weights)."""
    seg = plan.segments[k]
    run = populate_segment(
        sampler, plan.layout, prompt_of(seg.prompt), seg.latents, seed=seg.seed, segment=k,
        boundary_weight=plan.settings.boundary_weight, on_step=on_step, frames=plan.required_frames(k),
        split_cfg=plan.settings.splits_cfg(POPULATE), kv_dtype=plan.settings.kv_dtype, noise_init=plan.settings.noise_init,
    )
    return replace(seg, latents=run.result)


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
    for k in segments_to_populate(plan, segments):
        plan = plan.with_segment(k, populate_one(plan, k, sampler, prompt_of, on_step))
        if on_segment is not None:
            on_segment(k, plan)
    return plan


@torch.no_grad()
def decode_segments(plan: Plan, vae: WanVAE) -> Iterator[torch.Tensor]:
    """Decode populated segments one at a time → [3, T, H, W] in [-1, 1] each (memory stays one segment)."""
    for k in range(len(plan)):
        yield decode_segment(plan, k, vae)


@torch.no_grad()
def decode_segment(plan: Plan, k: int, vae: WanVAE) -> torch.Tensor:
    """The pixel frames [3, T, H, W] in [-1, 1] of segment k's latents that the video keeps (`plan.required_frames`)."""
    if plan.status(k) != "populated":
        raise ValueError(f"segment {k} is not populated ({plan.status(k)})")
    frames = list(plan.required_frames(k))
    return vae.decode(plan.segments[k].latents.latents[:, frames][None].to(vae.device))[0].float().cpu()


def decode_stream(plan: Plan, vae: WanVAE, fix_joins: int = 0) -> Iterator[torch.Tensor]:
    """The stitched video's new frames segment by segment ([3, T', H, W] each); `fix_joins`: join correction over
    that many frames (see `stitch_stream`)."""
    return stitch_stream(decode_segments(plan, vae), plan.layout, loop=plan.settings.loop, fix_joins=fix_joins)


def decode_video(plan: Plan, vae: WanVAE, fix_joins: int = 0) -> torch.Tensor:
    """The whole stitched video [3, 81 + 76·(S−1), H, W] (for Wan layouts; 76·S for a loop)."""
    return stitch(decode_segments(plan, vae), plan.layout, loop=plan.settings.loop, fix_joins=fix_joins)


def plan_identity(plan: Plan) -> str:
    """A short id of what a plan's populated frames depend on: model, layout, settings, and each segment's prompt,
    seed and keyframe latents. Front ends key on-disk caches of finished segments with it."""
    digest = hashlib.sha256(f"{plan.model_fingerprint}|{plan.layout.name}|{plan.settings!r}".encode())
    for seg in plan.segments:
        digest.update(f"|{seg.prompt}|{seg.seed}|".encode())
        if seg.latents is not None:
            frames = sorted(frozenset(plan.layout.keyframes) & seg.latents.known)
            digest.update(str(frames).encode())
            digest.update(seg.latents.latents[:, frames].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def adopt_populated(plan: Plan, stored: Plan) -> Plan:
    """`plan` with the populated segments of `stored` (e.g. left on disk by an interrupted run) taken over wherever
    the segment's prompt, seed and known frames agree exactly."""
    if len(stored) != len(plan) or stored.layout != plan.layout or stored.model_fingerprint != plan.model_fingerprint:
        return plan
    for k, (seg, old) in enumerate(zip(plan.segments, stored.segments)):
        if seg.latents is None or stored.status(k) != "populated" or (seg.prompt, seg.seed) != (old.prompt, old.seed):
            continue
        frames = sorted(seg.latents.known)
        if torch.equal(seg.latents.latents[:, frames], old.latents.latents[:, frames]):
            plan = plan.with_segment(k, replace(seg, latents=old.latents))
    return plan
