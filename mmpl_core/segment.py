"""Run a layout's groups for one segment: micro planning and content populating with a frame-indexed KV cache.

A segment's state is its latents and the set of frames that are final (`SegmentLatents`). The KV cache is derived
state: every run rebuilds the K/V of the known frames it needs with one t=0 pass per group (the official "cache
refresh"), so a planned segment can be populated later, on another device or in another process, with results that
do not depend on where or when it runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

import torch
from torch import nn

from .layout import FrameGroup, SegmentLayout
from .model import FrameKVCache, TextContext, encode_text, model_geometry, wan_forward
from .model.kv_cache import PLACEMENTS
from .noise_init import initial_noise
from .sampling import NUM_TRAIN_TIMESTEPS, HeldValues, SamplerConfig, chunk_noise, sample_chunk

StepCallback = Callable[[], None]


@dataclass(frozen=True)
class SegmentLatents:
    """Latents of one segment, [C, N, H, W] float32 on CPU; only frames in `known` are meaningful (others NaN)."""

    latents: torch.Tensor
    known: frozenset[int]

    @classmethod
    def empty(cls, channels: int, num_frames: int, height: int, width: int) -> "SegmentLatents":
        return cls(torch.full((channels, num_frames, height, width), float("nan")), frozenset())

    def keep_only(self, frames) -> "SegmentLatents":
        """A copy that forgets every frame outside `frames` (e.g. populated frames invalidated by an edit)."""
        keep = self.known & frozenset(frames)
        latents = torch.full_like(self.latents, float("nan"))
        latents[:, sorted(keep)] = self.latents[:, sorted(keep)]
        return SegmentLatents(latents, keep)

    def with_frames(self, frames: Sequence[int], values: torch.Tensor) -> "SegmentLatents":
        """A copy with `frames` set to `values` [C, len(frames), H, W]."""
        latents = self.latents.clone()
        latents[:, list(frames)] = values.to(latents)
        return SegmentLatents(latents, self.known | frozenset(frames))


@dataclass
class GroupTiming:
    name: str
    frames: tuple[int, ...]
    seconds: float
    forwards: int
    denoised: bool


@dataclass
class SegmentRun:
    """result: the segment after the run; cache_bytes: the KV cache's size at its fullest (all CFG branches)."""

    result: SegmentLatents
    timings: list[GroupTiming] = field(default_factory=list)
    cache_bytes: int = 0


class BranchExchange(Protocol):
    """Two devices sharing one guided chunk: each evaluates one CFG branch (0 = conditional, 1 = unconditional)."""

    branch: int

    def swap(self, mine: torch.Tensor) -> torch.Tensor:
        """Send this device's branch output, return the other device's (same shape)."""


@dataclass
class Prompt:
    """Text embeddings of one prompt and its negative prompt: [1, L, text_dim] each (negative unused at CFG 1)."""

    positive: torch.Tensor
    negative: torch.Tensor | None = None


class SegmentSampler:
    """Denoises the groups of a segment with one Wan2.1 module tree.

    Classifier-free guidance runs as one batch-2 forward (conditional, unconditional) over a shared KV cache, or
    (split_cfg) as one batch-1 forward per branch, possibly on two devices. `kv_cache` places the KV caches on the
    device or in CPU memory (`FrameKVCache`; the same bits either way).
    """

    def __init__(
        self,
        model: nn.Module,
        sampler: SamplerConfig,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        attention_backend: str = "auto",
        kv_cache: str = "device",
    ):
        if kv_cache not in PLACEMENTS:
            raise ValueError(f"kv_cache must be one of {PLACEMENTS}, got {kv_cache!r}")
        self.model = model
        self.geometry = model_geometry(model)
        self.sampler = sampler
        self.device = torch.device(device)
        self.dtype = dtype
        self.attention_backend = attention_backend
        self.kv_cache = kv_cache
        self._text_cache: dict[tuple[int, int | None], tuple[Prompt, TextContext]] = {}
        self.last_cache_bytes = 0
        self.on_denoised: Callable[[torch.Tensor], None] | None = None  # sees each step's x0 estimate [1, C, F, h, w]

    @property
    def guided(self) -> bool:
        return self.sampler.guidance != 1.0

    def text_context(self, prompt: Prompt, branch: int | None = None) -> TextContext:
        """Cross-attention K/V for a prompt, computed once and reused by every chunk that uses the same prompt:
        both CFG branches as a batch of 2 (branch None), or one branch (0 conditional, 1 unconditional)."""
        key = (id(prompt), branch)
        cached = self._text_cache.get(key)
        if cached is not None and cached[0] is prompt:
            return cached[1]
        embeds = [prompt.positive]
        if self.guided:
            if prompt.negative is None:
                raise ValueError(f"guidance {self.sampler.guidance} needs a negative prompt embedding")
            embeds.append(prompt.negative)
        if branch is not None:
            embeds = [embeds[branch]]
        context = torch.cat([e.to(self.device, self.dtype) for e in embeds])
        with torch.no_grad():
            text = encode_text(self.model, context, self.geometry)
        self._text_cache[key] = (prompt, text)
        return text

    def _branches(self, prompt: Prompt, cache_order, split: bool, exchange: BranchExchange | None, kv_dtype: str):
        """(text, cache) pairs this device evaluates: one batched pair, both branches apart, or its exchange branch."""
        def cache() -> FrameKVCache:
            return FrameKVCache(cache_order, self.geometry.num_layers, placement=self.kv_cache,
                                storage_dtype=kv_dtype, device=self.device)

        if not self.guided or not (split or exchange is not None):
            return [(self.text_context(prompt), cache())]
        branches = (exchange.branch,) if exchange is not None else (0, 1)
        return [(self.text_context(prompt, b), cache()) for b in branches]

    def _forward(self, x, frames, t, text, cache, sees, write=False, output=True):
        batch = text.batch
        x = x.to(self.device, self.dtype).expand(batch, *x.shape[1:])
        t = t.to(self.device, torch.float32).reshape(1).expand(batch)
        return wan_forward(
            self.model, x, frames, t, text, cache=cache, visible=sees, write_cache=write,
            geometry=self.geometry, attention_backend=self.attention_backend, return_output=output,
        )

    def _velocity_fn(self, frames, branches, sees, exchange: BranchExchange | None):
        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            outs = [self._forward(x, frames, t, text, cache, sees).float() for text, cache in branches]
            v = outs[0] if len(outs) == 1 else torch.cat(outs)
            if exchange is not None:
                theirs = exchange.swap(v.cpu()).to(v.device)
                v = torch.cat([v, theirs] if exchange.branch == 0 else [theirs, v])
            if self.guided:
                cond, uncond = v.chunk(2)
                v = uncond + self.sampler.guidance * (cond - uncond)
            if self.on_denoised is not None:  # the chunk's clean estimate x0 = x_t − σ·v (t = 1000·σ), for previews
                self.on_denoised(x.float() - t.float() / NUM_TRAIN_TIMESTEPS * v.float())
            return v.to(x.dtype)

        return velocity

    @torch.no_grad()
    def run(
        self,
        layout: SegmentLayout,
        state: SegmentLatents,
        groups: Sequence[int],
        prompt: Prompt,
        *,
        seed: int,
        segment: int,
        boundary_weight: float = 0.0,
        on_step: StepCallback | None = None,
        split_cfg: bool = False,
        exchange: BranchExchange | None = None,
        kv_dtype: str = "compute",
        held: Mapping[int, torch.Tensor] | None = None,
        noise_init: str = "official",
    ) -> SegmentRun:
        """Denoise `groups` (indices into `layout.groups`) of a segment whose `state.known` frames are final.

        Every group to denoise must see only frames that are known or produced earlier in this run. Noise of group g
        comes from `chunk_noise(seed, segment, g)`, so the result is independent of scheduling. `boundary_weight`
        and `noise_init` start populate groups from noise tied to their planning frames (paper Appendix F, see
        `noise_init`). `held`: frame → latent [C, h, w] of frames given rather than sampled (keyframe targets): their
        group is denoised with them held at each step's noise level (replacement sampling); they come out as given.
        `split_cfg` evaluates the two guidance branches as separate batch-1 forwards (each with its own KV cache);
        with an `exchange`, this device evaluates only `exchange.branch` and a partner device the other, with
        results bit-identical to `split_cfg` on one device. `kv_dtype`: "compute" or "float8_e4m3fn" K/V storage.
        """
        todo = sorted(set(groups))
        held = dict(held or {})
        stray = sorted(set(held) - set(layout.frames_of(todo)))
        if stray:
            raise ValueError(f"segment {segment}: held frames {stray} are not among the frames this run denoises")
        for g in todo:
            overlap = set(layout.groups[g].frames) & state.known
            if overlap:
                raise ValueError(f"group {layout.groups[g].name} of segment {segment} is already known: {sorted(overlap)}")
        cache_frames = self._frames_to_cache(layout, todo, state.known)
        available = state.known | frozenset(layout.frames_of(todo))
        missing = sorted(cache_frames - available)
        if missing:
            raise ValueError(f"segment {segment}: frames {missing} are needed as context but are neither known nor produced")
        order = [f for grp in layout.groups for f in grp.frames if f in cache_frames]
        branches = self._branches(prompt, order, split_cfg, exchange, kv_dtype)
        channels, _, height, width = state.latents.shape
        run = SegmentRun(state)
        for g, group in enumerate(layout.groups):
            denoise = g in todo
            cached = bool(cache_frames & set(group.frames))
            if not (denoise or cached):
                continue
            start, forwards = time.perf_counter(), 0
            if denoise:
                noise = chunk_noise(seed, segment, g, (1, channels, len(group.frames), height, width))
                noise = initial_noise(noise, layout, g, run.result.latents, boundary_weight, noise_init, seed=seed,
                                      segment=segment)
                velocity = self._velocity_fn(group.frames, branches, group.sees, exchange)
                step_done = (lambda i, n: on_step()) if on_step is not None else None
                clean = sample_chunk(velocity, noise, self.sampler, callback=step_done,
                                     held=_held_values(group, held, noise))
                run.result = run.result.with_frames(group.frames, clean[0].cpu())
                forwards += self.sampler.steps
            if cached:
                x = run.result.latents[:, list(group.frames)][None]
                for text, cache in branches:
                    self._forward(x, group.frames, torch.zeros(1), text, cache, group.sees, write=True, output=False)
                forwards += 1
            run.timings.append(GroupTiming(group.name, group.frames, time.perf_counter() - start, forwards, denoise))
        run.cache_bytes = sum(cache.nbytes() for _, cache in branches)
        self.last_cache_bytes = run.cache_bytes  # diagnostics for callers that only keep the result
        return run

    @staticmethod
    def _frames_to_cache(layout: SegmentLayout, todo: Sequence[int], known: frozenset[int]) -> frozenset[int]:
        """Frames whose K/V this run needs: what the groups to denoise see, closed over the known groups' own views."""
        needed = {f for g in todo for f in layout.groups[g].sees}
        for g in reversed(range(len(layout.groups))):
            group = layout.groups[g]
            if g not in todo and needed & set(group.frames):
                needed |= set(group.sees)
        return frozenset(needed)


def _held_values(group: FrameGroup, held: Mapping[int, torch.Tensor], noise: torch.Tensor) -> HeldValues | None:
    """The held frames of `group` as a mask and values over its chunk [1, C, F, h, w] (None if it holds none)."""
    mine = [i for i, f in enumerate(group.frames) if f in held]
    if not mine:
        return None
    mask = torch.zeros(1, 1, len(group.frames), 1, 1, dtype=torch.bool)
    values = torch.zeros_like(noise, device="cpu")
    for i in mine:
        latent = held[group.frames[i]]
        if tuple(latent.shape) != tuple(values.shape[1:2] + values.shape[3:]):
            raise ValueError(f"held frame {group.frames[i]} must be a latent {list(values.shape[1:2] + values.shape[3:])}, "
                             f"got {list(latent.shape)}")
        mask[0, 0, i] = True
        values[0, :, i] = latent.to(values)
    return HeldValues(mask, values)


def plan_segment(
    sampler: SegmentSampler,
    layout: SegmentLayout,
    prompt: Prompt,
    latent_shape: tuple[int, int, int],
    *,
    seed: int,
    segment: int,
    context: torch.Tensor | None = None,
    on_step: StepCallback | None = None,
    split_cfg: bool = False,
    exchange: BranchExchange | None = None,
    kv_dtype: str = "compute",
    held: Mapping[int, torch.Tensor] | None = None,
) -> SegmentRun:
    """Micro planning: the layout's plan-phase frames of one segment.

    latent_shape: (C, H, W) of a latent frame. context: optional clean latents [C, k, H, W] for the first k frames
    (k = layout.context_frames from a bridge, or layout.image_frames from an input image). `split_cfg`, `exchange`,
    `kv_dtype` and `held` (keyframe targets): see `SegmentSampler.run`.
    """
    state = SegmentLatents.empty(latent_shape[0], layout.num_frames, latent_shape[1], latent_shape[2])
    if context is not None:
        k = context.shape[1]
        if k not in (layout.context_frames, layout.image_frames) or k == 0:
            raise ValueError(
                f"context has {k} latent frames; layout {layout.name} takes {layout.context_frames} (bridge) "
                f"or {layout.image_frames} (image)"
            )
        state = state.with_frames(range(k), context)
    todo = [g for g in layout.plan_groups if not set(layout.groups[g].frames) <= state.known]
    return sampler.run(layout, state, todo, prompt, seed=seed, segment=segment, on_step=on_step, split_cfg=split_cfg,
                       exchange=exchange, kv_dtype=kv_dtype, held=held)


def populate_segment(
    sampler: SegmentSampler,
    layout: SegmentLayout,
    prompt: Prompt,
    planned: SegmentLatents,
    *,
    seed: int,
    segment: int,
    boundary_weight: float = 0.0,
    on_step: StepCallback | None = None,
    frames: Sequence[int] | None = None,
    groups: Sequence[int] | None = None,
    split_cfg: bool = False,
    exchange: BranchExchange | None = None,
    kv_dtype: str = "compute",
    noise_init: str = "official",
) -> SegmentRun:
    """Content populating, given a planned segment: `groups` if given, else every group not yet known that produces
    one of `frames` (default: all frames). Resumable: known groups are kept."""
    wanted = set(range(layout.num_frames) if frames is None else frames)
    todo = [
        g for g in (range(len(layout.groups)) if groups is None else groups)
        if not set(layout.groups[g].frames) <= planned.known and (groups is not None or wanted & set(layout.groups[g].frames))
    ]
    return sampler.run(
        layout, planned, todo, prompt, seed=seed, segment=segment, boundary_weight=boundary_weight, on_step=on_step,
        split_cfg=split_cfg, exchange=exchange, kv_dtype=kv_dtype, noise_init=noise_init,
    )
