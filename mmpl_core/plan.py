"""The Plan: a long video's micro plans, segment by segment, as an immutable value.

A plan holds, for each segment, its prompt, seed and latents (keyframes once planned, every frame once populated),
plus the settings that produced it. Operations return new plans (ComfyUI caches node outputs by their inputs, so
nothing is ever mutated in place). Saving and loading live in `plan_store`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torch import nn

from .layout import PLAN, SegmentLayout
from .model.fp8 import STORAGE_DTYPES
from .noise_init import NOISE_INITS
from .sampling import SamplerConfig
from .segment import SegmentLatents

BRIDGES = ("vae", "naive")
# What starts segment k+1: segment k's terminal keyframes (maximum throughput: every frame of a segment is kept) or its
# midpoint keyframes (minimum memory peak: a segment is kept up to its midpoint and its deepest-context tail is skipped).
HANDOFFS = ("terminal", "midpoint")
# How guided chunks evaluate classifier-free guidance: one batch-2 forward (fastest on one device) or one batch-1
# forward per branch (the official code's numerics), which lets two idle devices share a chunk: for the plan chunks
# only ("split-plan": shortens the plan chain, populating keeps the faster batch-2 pass), or for every chunk ("split").
CFG_BRANCHES = ("batched", "split-plan", "split")
# How the KV cache stores keys and values: as computed, or in float8 e4m3 with per-(batch, frame, head) scales (half
# the bytes, different bits). Where the cache lives (device or CPU memory) is not a setting: it never changes the bits.
KV_DTYPES = STORAGE_DTYPES


@dataclass(frozen=True)
class GenerationSettings:
    """Everything besides prompts that decides a long video's latents.

    bridge: "vae" (decode the terminal keyframes and re-encode the last 5 pixel frames, the MMPL bridge) or "naive"
        (reuse the terminal latents directly: the paper's Appendix E baseline).
    color_anchor: 0 = off; 1 = match each bridged context's per-channel latent mean/std to segment 1's.
    boundary_weight: weight of the neighbouring anchor in the initial noise of a populate group's boundary frames
        (paper Appendix F); 0 = plain noise, which is what the official code effectively does.
    kv_dtype: K/V storage of the KV cache, "compute" or "float8_e4m3fn" (see `KV_DTYPES`).
    noise_init: the form of that noise init, "official" (edge frames mix in their neighbouring anchor's latent) or
        "paper" (content frames mix in the noise of the planning frames around them); see `noise_init`.
    loop: the video ends where it began: the last segment is planned toward the first segment's starting frames
        (its hand-off keyframes are held to them, through the bridge) and stitching drops the repeated frames.
    """

    seed: int = 0
    height: int = 64
    width: int = 64
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    bridge: str = "vae"
    color_anchor: float = 0.0
    boundary_weight: float = 0.0
    fps: int = 16
    handoff: str = "terminal"
    cfg_branches: str = "batched"
    kv_dtype: str = "compute"
    noise_init: str = "official"
    loop: bool = False

    def __post_init__(self):
        if self.bridge not in BRIDGES:
            raise ValueError(f"bridge must be one of {BRIDGES}, got {self.bridge!r}")
        if self.handoff not in HANDOFFS:
            raise ValueError(f"handoff must be one of {HANDOFFS}, got {self.handoff!r}")
        if self.cfg_branches not in CFG_BRANCHES:
            raise ValueError(f"cfg_branches must be one of {CFG_BRANCHES}, got {self.cfg_branches!r}")
        if self.kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype must be one of {KV_DTYPES}, got {self.kv_dtype!r}")
        if self.noise_init not in NOISE_INITS:
            raise ValueError(f"noise_init must be one of {NOISE_INITS}, got {self.noise_init!r}")
        if not 0.0 <= self.color_anchor <= 1.0:
            raise ValueError(f"color_anchor must lie in [0, 1], got {self.color_anchor}")
        if not 0.0 <= self.boundary_weight < 1.0:
            raise ValueError(f"boundary_weight must lie in [0, 1), got {self.boundary_weight}")
        if self.height <= 0 or self.width <= 0 or self.height % 16 or self.width % 16:
            raise ValueError(f"height and width must be positive multiples of 16, got {self.height}x{self.width}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def splits_cfg(self, phase: str) -> bool:
        """Whether chunks of `phase` (layout.PLAN or layout.POPULATE) evaluate their CFG branches apart."""
        return self.cfg_branches == "split" or (self.cfg_branches == "split-plan" and phase == PLAN)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent frame (Wan VAE: 16 channels, 8× spatial)."""
        return (16, self.height // 8, self.width // 8)


@dataclass(frozen=True)
class KeyframeTarget:
    """A keyframe given rather than planned: latent `frame` of its segment is held to `latent` [C, h, w] while the
    segment is planned, or (`source` = (segment, frame)) to a keyframe of an earlier segment, read when this one is
    planned. `label` says where it came from (an image file, "S2 f7"), for plan files and reports."""

    frame: int
    latent: torch.Tensor | None = None
    source: tuple[int, int] | None = None
    label: str = ""

    def __post_init__(self):
        if (self.latent is None) == (self.source is None):
            raise ValueError("a keyframe target takes either a latent or a source (segment, frame), not both")


@dataclass(frozen=True)
class SegmentPlan:
    """One segment of a plan. `latents` is None until the segment is planned.

    locked: re-planning keeps this segment's micro plan (its context frames still follow the chain).
    targets: keyframes given for this segment (held while it is planned), in frame order.
    """

    prompt: str
    seed: int
    latents: SegmentLatents | None = None
    locked: bool = False
    targets: tuple[KeyframeTarget, ...] = ()

    def status(self, layout: SegmentLayout, required: Sequence[int] | None = None) -> str:
        """empty, partial, planned, or populated (every frame in `required`, default all, is known)."""
        if self.latents is None:
            return "empty"
        if self.latents.known >= frozenset(range(layout.num_frames) if required is None else required):
            return "populated"
        return "planned" if self.latents.known >= frozenset(layout.keyframes) else "partial"


@dataclass(frozen=True)
class Plan:
    layout: SegmentLayout
    settings: GenerationSettings
    segments: tuple[SegmentPlan, ...]
    model_fingerprint: str
    negative_prompt: str = ""
    image_latent: torch.Tensor | None = None  # I2V: [C, image_frames, h, w], the first segment's clean context

    @classmethod
    def new(
        cls,
        layout: SegmentLayout,
        settings: GenerationSettings,
        prompts: Sequence[str],
        num_segments: int,
        model_fingerprint: str,
        negative_prompt: str = "",
        image_latent: torch.Tensor | None = None,
    ) -> "Plan":
        """An unplanned plan: one prompt for every segment, or one prompt per segment."""
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        prompts = list(prompts)
        if len(prompts) == 1:
            prompts = prompts * num_segments
        if len(prompts) != num_segments:
            raise ValueError(f"got {len(prompts)} prompts for {num_segments} segments; give one, or one per segment")
        if image_latent is not None and not layout.image_frames:
            raise ValueError(f"layout {layout.name} is text-to-video; an input image needs an image-to-video layout")
        if image_latent is None and layout.image_frames:
            raise ValueError(f"layout {layout.name} is image-to-video and needs an input image")
        if settings.handoff == "midpoint" and not layout.midpoint:
            raise ValueError(f"layout {layout.name} has no midpoint keyframe pair; the midpoint handoff (memory mode) "
                             "needs one (use the terminal handoff, throughput mode)")
        if settings.loop and num_segments < 2:
            raise ValueError(f"a loop needs at least 2 segments (the last one is planned toward the first), got "
                             f"{num_segments}")
        segments = tuple(SegmentPlan(p, settings.seed) for p in prompts)
        return cls(layout, settings, segments, model_fingerprint, negative_prompt, image_latent)

    def __len__(self) -> int:
        return len(self.segments)

    def statuses(self) -> list[str]:
        return [self.status(k) for k in range(len(self.segments))]

    def status(self, k: int) -> str:
        return self.segments[k].status(self.layout, self.required_frames(k))

    def required_frames(self, k: int) -> tuple[int, ...]:
        """The latent frames segment k contributes to the video (see `required_frames`)."""
        return required_frames(self.layout, self.settings.handoff, k, len(self.segments))

    @property
    def handoff_frames(self) -> tuple[int, ...]:
        """The keyframes of segment k that the bridge turns into segment k+1's first latents."""
        return self.layout.midpoint if self.settings.handoff == "midpoint" else self.layout.terminal

    # --- operations (each returns a new plan) --------------------------------------------------------------------
    def _check(self, k: int) -> None:
        if not 0 <= k < len(self.segments):
            raise IndexError(f"segment {k} does not exist (plan has {len(self.segments)} segments)")

    def with_segment(self, k: int, segment: SegmentPlan) -> "Plan":
        self._check(k)
        return replace(self, segments=self.segments[:k] + (segment,) + self.segments[k + 1 :])

    def lock(self, k: int, locked: bool = True) -> "Plan":
        self._check(k)
        return self.with_segment(k, replace(self.segments[k], locked=locked))

    def reroll(self, k: int, seed: int) -> "Plan":
        """Segment k gets a new seed; its latents are dropped (re-plan from k to regenerate)."""
        self._check(k)
        return self.with_segment(k, replace(self.segments[k], seed=seed, latents=None, locked=False))

    def with_prompt(self, k: int, prompt: str) -> "Plan":
        self._check(k)
        return self.with_segment(k, replace(self.segments[k], prompt=prompt, latents=None, locked=False))

    def with_keyframe(self, k: int, frame: int, latent: torch.Tensor) -> "Plan":
        """Replace keyframe `frame` of segment k by a latent [C, h, w]. The segment keeps its other keyframes, is
        locked (its plan is now the user's) and loses its populated frames; later segments must be re-planned."""
        self._check(k)
        seg = self.segments[k]
        if seg.latents is None:
            raise ValueError(f"segment {k} is not planned yet; plan it before replacing keyframes")
        if frame not in self.layout.keyframes:
            raise ValueError(f"frame {frame} is not a keyframe of layout {self.layout.name}: {self.layout.keyframes}")
        if k > 0 and frame < self.layout.context_frames:  # re-planning would overwrite it with the bridge's output
            raise ValueError(
                f"frame {frame} of segment {k} is one of the {self.layout.context_frames} latents the VAE bridge "
                f"makes from segment {k - 1}'s terminal keyframes {list(self.layout.terminal)}; replace those in "
                f"segment {k - 1} instead"
            )
        if k == 0 and frame < self.layout.image_frames:
            raise ValueError(f"frame {frame} of segment 0 is the input image; give another image instead")
        expected = self.settings.latent_shape
        if tuple(latent.shape) != expected:
            raise ValueError(f"keyframe latent must have shape {expected}, got {tuple(latent.shape)}")
        edited = seg.latents.keep_only(self.layout.keyframes).with_frames([frame], latent[:, None])
        return self.with_segment(k, replace(seg, latents=edited, locked=True))

    def extended(self, num_segments: int, prompt: str) -> "Plan":
        """This plan with unplanned segments (prompt, the plan's seed) appended up to `num_segments`."""
        if num_segments < len(self.segments):
            raise ValueError(f"cannot extend a plan of {len(self.segments)} segments to {num_segments}")
        new = tuple(SegmentPlan(prompt, self.settings.seed) for _ in range(num_segments - len(self.segments)))
        segments = self.segments
        if new and self.settings.loop:  # the old last segment was planned toward the loop's start: plan it anew
            segments = segments[:-1] + (replace(segments[-1], latents=None, locked=False),)
        return replace(self, segments=segments + new)

    def with_target(self, k: int, target: KeyframeTarget) -> "Plan":
        """Segment k with keyframe `target` given (replacing one on the same frame). The segment loses its latents:
        it is planned anew with the target held, and the segments after it follow its new hand-off keyframes."""
        self._check(k)
        layout, seg = self.layout, self.segments[k]
        allowed = [f for f in layout.keyframes if f >= layout.context_frames]
        if target.frame not in allowed:
            raise ValueError(f"frame {target.frame} cannot be given as a target; layout {layout.name} plans frames "
                             f"{allowed} (the ones before come from the bridge or the input image)")
        if target.latent is not None and tuple(target.latent.shape) != self.settings.latent_shape:
            raise ValueError(f"a target latent must have shape {self.settings.latent_shape}, got "
                             f"{tuple(target.latent.shape)}")
        if target.source is not None and not (0 <= target.source[0] < k and target.source[1] in layout.keyframes):
            raise ValueError(f"a target of segment {k} can be a keyframe {list(layout.keyframes)} of an earlier "
                             f"segment (0..{k - 1}), got segment {target.source[0]} frame {target.source[1]}")
        if k == len(self.segments) - 1 and target.frame in self.loop_frames:
            raise ValueError(f"frame {target.frame} of the last segment is held to the loop's start; give another frame")
        targets = sorted([t for t in seg.targets if t.frame != target.frame] + [target], key=lambda t: t.frame)
        return self.with_segment(k, replace(seg, targets=tuple(targets), latents=None, locked=False))

    @property
    def loop_frames(self) -> tuple[int, ...]:
        """The last segment's frames that a loop holds to the first segment's start (none without a loop)."""
        return self.handoff_frames if self.settings.loop else ()

    def segments_read_by_plan(self, k: int) -> set[int]:
        """Other segments whose latents planning segment k reads: targets' sources, and the first segment for the
        last segment of a loop (the previous segment, read through the bridge, is not counted)."""
        read = {t.source[0] for t in self.segments[k].targets if t.source is not None}
        return read | ({0} if self.settings.loop and k == len(self.segments) - 1 else set())

    def replan_start(self) -> int:
        """Where re-planning this plan must start: the first segment that is not planned (new, re-rolled, new
        prompt) or that is locked (hand-edited: the segments after it follow its new keyframes); len(plan) if none.
        Re-planning keeps locked micro plans, and populated frames of segments whose keyframes come out unchanged."""
        for k, seg in enumerate(self.segments):
            if seg.locked or self.status(k) in ("empty", "partial"):
                return k
        return len(self.segments)

    def first_difference(self, other: "Plan") -> int | None:
        """Index of the first segment whose prompt, seed or latents differ from `other` (None if none do)."""
        changed = self.changed_segments(other)
        return changed[0] if changed else None

    def changed_segments(self, other: "Plan") -> list[int]:
        """Segments whose prompt, seed or latents differ from `other`'s, plus those only one of the plans has."""
        changed = [k for k, (a, b) in enumerate(zip(self.segments, other.segments)) if not _same_segment(a, b)]
        return changed + list(range(min(len(self), len(other)), max(len(self), len(other))))


def required_frames(layout: SegmentLayout, handoff: str, k: int, num_segments: int) -> tuple[int, ...]:
    """Latent frames of segment k that end up in the video: all of them, except with the midpoint handoff, where
    every segment stops at its midpoint keyframes (the next one starts from them; the last one stops there too, so
    no segment ever runs the deepest-context tail group and the peak memory stays the head's)."""
    if handoff == "midpoint":
        if not layout.midpoint:
            raise ValueError(f"layout {layout.name} has no midpoint keyframe pair; use the terminal handoff")
        return tuple(range(layout.midpoint[-1] + 1))
    return tuple(range(layout.num_frames))


def parse_segment_selection(text: str | None, count: int) -> list[int]:
    """'all' (or nothing) or 1-based segment numbers and ranges such as '1,3-5' → sorted 0-based indices."""
    if text is None or text.strip().lower() in ("", "all"):
        return list(range(count))
    chosen = set()
    for part in text.split(","):
        if not part.strip():
            continue
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"expected 'all' or 1-based numbers/ranges like '1,3-5', got {text!r}") from None
        if not 1 <= first <= last <= count:
            raise ValueError(f"{part.strip()!r} is outside 1..{count}")
        chosen.update(range(first - 1, last))
    return sorted(chosen)


def _same_segment(a: SegmentPlan, b: SegmentPlan) -> bool:
    return (a.prompt, a.seed) == (b.prompt, b.seed) and _same_latents(a.latents, b.latents) and same_targets(a, b)


def same_targets(a: SegmentPlan, b: SegmentPlan) -> bool:
    """Whether two segments were given the same keyframes."""
    key = lambda t: (t.frame, t.source, t.label)  # noqa: E731
    return [key(t) for t in a.targets] == [key(t) for t in b.targets] and all(
        (x.latent is None) == (y.latent is None) and (x.latent is None or torch.equal(x.latent, y.latent))
        for x, y in zip(a.targets, b.targets))


def _same_latents(a: SegmentLatents | None, b: SegmentLatents | None) -> bool:
    if a is None or b is None:
        return a is b
    frames = sorted(a.known)
    return a.known == b.known and torch.equal(a.latents[:, frames], b.latents[:, frames])


def model_fingerprint(model: nn.Module) -> str:
    """A short, stable id of a DiT's weights: shapes of all parameters plus the bytes of a few of them."""
    digest = hashlib.sha256()
    params = dict(model.named_parameters())
    for name in sorted(params):
        digest.update(f"{name}:{tuple(params[name].shape)};".encode())
    for name in ("patch_embedding.weight", "head.head.weight", "blocks.0.self_attn.q.weight"):
        if name in params:
            sample = params[name].detach().flatten()[::97]  # a strided sample keeps 14B models cheap to fingerprint
            digest.update(sample.float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
