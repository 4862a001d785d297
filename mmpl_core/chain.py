"""Macro planning: chain the micro plans of consecutive segments through the bridge.

Segment 1 is planned from noise (T2V) or from the input image's latent (I2V); segment k+1 from segment k's bridged
terminal keyframes. Planning a chain populates nothing; it only fills each segment's keyframes.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import torch

from .bridge import anchor_colour, naive_bridge, reverse_bridge, vae_bridge
from .layout import PLAN
from .plan import Plan, SegmentPlan
from .segment import BranchExchange, Prompt, SegmentLatents, SegmentSampler, StepCallback, plan_segment
from .vae import WanVAE

PromptFn = Callable[[str], Prompt]
SegmentCallback = Callable[[int, Plan], None]


def segment_context(plan: Plan, k: int, vae: WanVAE | None) -> torch.Tensor | None:
    """The clean first latents [C, k, h, w] of segment k: the input image's latent (first segment, I2V), nothing
    (first segment, T2V), or the bridge of segment k−1's hand-off keyframes (terminal, or midpoint)."""
    if k == 0:
        return plan.image_latent
    previous = plan.segments[k - 1].latents
    if previous is None or not set(plan.handoff_frames) | {0} <= previous.known:
        raise ValueError(f"segment {k} needs segment {k - 1} to be planned first")
    terminal = previous.latents[:, list(plan.handoff_frames)]
    if plan.settings.bridge == "vae":
        if vae is None:
            raise ValueError("the VAE bridge needs a VAE")
        context = vae_bridge(vae, previous.latents[:, 0], terminal)
    else:
        context = naive_bridge(terminal)
    if plan.settings.color_anchor:
        first = plan.segments[0].latents
        reference = first.latents[:, list(plan.layout.keyframes)]
        context = anchor_colour(context, reference, plan.settings.color_anchor)
    return context


def segment_targets(plan: Plan, k: int, vae: WanVAE | None) -> dict[int, torch.Tensor]:
    """The keyframes of segment k held while it is planned, frame → latent [C, h, w]: its given targets (a keyframe
    of an earlier segment is read now), and for the last segment of a loop its hand-off keyframes, which the bridge
    must turn back into the first segment's starting latents."""
    held = {}
    for target in plan.segments[k].targets:
        if target.latent is not None:
            held[target.frame] = target.latent
            continue
        source, frame = target.source
        latents = plan.segments[source].latents
        if latents is None or frame not in latents.known:
            raise ValueError(f"segment {k}'s target f{target.frame} is keyframe {frame} of segment {source}, which is "
                             "not planned")
        held[target.frame] = latents.latents[:, frame]
    if k == len(plan) - 1 and plan.loop_frames:
        first, count = plan.segments[0].latents, plan.layout.context_frames
        if first is None or not set(range(count)) <= first.known:
            raise ValueError(f"the loop's last segment {k} needs segment 0 to be planned first")
        start = first.latents[:, :count]
        if plan.settings.bridge == "vae":
            if vae is None:
                raise ValueError("a loop over the VAE bridge needs a VAE")
            start = reverse_bridge(vae, start)
        held.update({f: start[:, i] for i, f in enumerate(plan.loop_frames)})
    return held


def _with_context(latents: SegmentLatents, context: torch.Tensor, keyframes) -> SegmentLatents:
    """A locked segment under a new context: its micro plan is kept, its populated frames are not."""
    if torch.equal(latents.latents[:, : context.shape[1]], context):
        return latents
    return latents.keep_only(keyframes).with_frames(range(context.shape[1]), context)


def plan_chain(
    plan: Plan,
    sampler: SegmentSampler,
    vae: WanVAE | None,
    prompt_of: PromptFn,
    *,
    start: int = 0,
    on_step: StepCallback | None = None,
    on_segment: SegmentCallback | None = None,
    seconds: dict[str, float] | None = None,
) -> Plan:
    """(Re-)plan segments start … S−1 in order; segments before `start` stay bit-identical.

    Locked segments keep their micro plan (their first latents still follow the chain). A re-planned segment whose
    keyframes come out unchanged keeps its populated frames. `on_segment(k, plan)` runs after each segment
    (e.g. to save the plan), so an interrupted chain loses at most the segment in progress. `seconds`, if given,
    accumulates the time spent in "bridge" and "plan".
    """
    seconds = {} if seconds is None else seconds
    if not 0 <= start <= len(plan):
        raise IndexError(f"start segment {start} is outside 0..{len(plan)}")
    for k in range(start, len(plan)):
        tick = time.perf_counter()
        context = segment_context(plan, k, vae)
        tock = time.perf_counter()
        seconds["bridge"] = seconds.get("bridge", 0.0) + tock - tick
        plan = plan.with_segment(k, plan_one(plan, k, sampler, prompt_of, context, on_step=on_step, vae=vae))
        seconds["plan"] = seconds.get("plan", 0.0) + time.perf_counter() - tock
        if on_segment is not None:
            on_segment(k, plan)
    return plan


def plan_one(
    plan: Plan,
    k: int,
    sampler: SegmentSampler,
    prompt_of: PromptFn,
    context: torch.Tensor | None,
    *,
    on_step: StepCallback | None = None,
    exchange: BranchExchange | None = None,
    vae: WanVAE | None = None,
) -> SegmentPlan:
    """Segment k (micro) planned from its first latents `context` (`segment_context`), with the keyframes of
    `segment_targets` held (the VAE turns a loop's start into its last segment's hand-off keyframes).

    A locked segment keeps its micro plan under the new context; a re-planned one whose keyframes come out
    unchanged keeps its populated frames. `exchange` shares the guided chunks with a partner device
    (cfg_branches "split-plan" or "split" only)."""
    seg, layout = plan.segments[k], plan.layout
    if seg.locked and seg.latents is not None:
        latents = seg.latents if context is None else _with_context(seg.latents, context, layout.keyframes)
        return replace(seg, latents=latents)
    split = plan.settings.splits_cfg(PLAN)
    if exchange is not None and not split:
        raise ValueError("sharing a plan chunk between devices needs cfg_branches 'split-plan' or 'split'")
    run = plan_segment(
        sampler, layout, prompt_of(seg.prompt), plan.settings.latent_shape,
        seed=seg.seed, segment=k, context=context, on_step=on_step, split_cfg=split, exchange=exchange,
        kv_dtype=plan.settings.kv_dtype, held=segment_targets(plan, k, vae),
    )
    latents = run.result
    if seg.latents is not None and _same_keyframes(seg.latents, latents, layout.keyframes):
        latents = seg.latents
    return replace(seg, latents=latents)


def _same_keyframes(old: SegmentLatents, new: SegmentLatents, keyframes) -> bool:
    frames = list(keyframes)
    return set(frames) <= old.known and torch.equal(old.latents[:, frames], new.latents[:, frames])
