"""Segment layouts as data: which latent frames are denoised together, in which order, and what each group sees.

A layout is a list of frame groups. Each group is denoised jointly (one chunk), at its frames' true temporal
positions, attending to the clean K/V of the frames it `sees` plus itself. Planning, populating, training masks and
the KV cache's slots all follow from this data.

The Wan2.1 T2V layout of the MMPL paper (21 latent frames = 81 pixel frames):

    initial [0,1] → plan [2,3 | 10,11,12 | 19,20] → head [4..9] → tail [13..18]
    plan sees {0,1}; head sees {0..3, 10..12} (not the terminal 19,20); tail sees everything before it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

PLAN = "plan"
POPULATE = "populate"


class LayoutError(ValueError):
    """A segment layout that cannot be run."""


@dataclass(frozen=True)
class FrameGroup:
    """Latent frames denoised jointly. `sees` lists earlier frames whose clean K/V this group attends to."""

    name: str
    frames: tuple[int, ...]
    sees: tuple[int, ...]
    phase: str  # PLAN (micro planning: runs on the plan chain) or POPULATE (content populating)


@dataclass(frozen=True)
class SegmentLayout:
    """The groups of one segment, in the order they run.

    context_frames: the leading frames that the previous segment's bridge (or an input image) supplies as clean
        latents; in the first T2V segment they are generated instead.
    terminal: the frames handed to the VAE bridge to start the next segment (maximum-throughput scheduling).
    image_frames: the leading frames an input image supplies in image-to-video (0 for T2V layouts).
    midpoint: the two midpoint keyframes that start the next segment in minimum-memory scheduling, where each
        segment is kept only up to them (its tail, the group with the deepest context, is never populated); empty if
        the layout has no such pair.
    """

    name: str
    num_frames: int
    groups: tuple[FrameGroup, ...]
    context_frames: int = 2
    terminal: tuple[int, ...] = ()
    image_frames: int = 0
    midpoint: tuple[int, ...] = ()
    _group_of: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_group_of", {f: i for i, g in enumerate(self.groups) for f in g.frames})
        self.validate()

    # --- derived views ---------------------------------------------------------------------------------------
    def group_of(self, frame: int) -> int:
        return self._group_of[frame]

    @property
    def plan_groups(self) -> tuple[int, ...]:
        return tuple(i for i, g in enumerate(self.groups) if g.phase == PLAN)

    @property
    def populate_groups(self) -> tuple[int, ...]:
        return tuple(i for i, g in enumerate(self.groups) if g.phase == POPULATE)

    @property
    def keyframes(self) -> tuple[int, ...]:
        """Frames that exist once the segment is planned (context + micro plan), in temporal order."""
        return tuple(sorted(f for i in self.plan_groups for f in self.groups[i].frames))

    @property
    def seen_frames(self) -> frozenset[int]:
        """Frames some group attends to: the only frames whose K/V ever need caching."""
        return frozenset(f for g in self.groups for f in g.sees)

    def frames_of(self, groups: Iterable[int]) -> tuple[int, ...]:
        return tuple(sorted(f for i in groups for f in self.groups[i].frames))

    def visibility(self) -> list[list[bool]]:
        """[query frame][key frame] → may attend, over the segment's frames (its own group included)."""
        vis = [[False] * self.num_frames for _ in range(self.num_frames)]
        for g in self.groups:
            for q in g.frames:
                for k in g.frames + g.sees:
                    vis[q][k] = True
        return vis

    # --- checks ----------------------------------------------------------------------------------------------
    def validate(self) -> None:
        where = f"layout {self.name!r}"
        if self.num_frames < 1:
            raise LayoutError(f"{where}: num_frames must be >= 1, got {self.num_frames}")
        produced: list[int] = []
        seen_phase_populate = False
        for i, g in enumerate(self.groups):
            if not g.frames:
                raise LayoutError(f"{where}: group {i} ({g.name}) has no frames")
            if g.phase not in (PLAN, POPULATE):
                raise LayoutError(f"{where}: group {g.name} has phase {g.phase!r}; expected {PLAN!r} or {POPULATE!r}")
            if g.phase == PLAN and seen_phase_populate:
                raise LayoutError(f"{where}: plan group {g.name} comes after a populate group")
            seen_phase_populate |= g.phase == POPULATE
            bad = [f for f in g.frames if not 0 <= f < self.num_frames]
            if bad:
                raise LayoutError(f"{where}: group {g.name} has frames {bad} outside 0..{self.num_frames - 1}")
            twice = sorted(set(g.frames) & set(produced)) or sorted({f for f in g.frames if g.frames.count(f) > 1})
            if twice:
                raise LayoutError(f"{where}: frames {twice} are produced more than once (again in group {g.name})")
            own = sorted(set(g.sees) & set(g.frames))
            if own:
                raise LayoutError(f"{where}: group {g.name} lists its own frames {own} in `sees`")
            early = sorted(set(g.sees) - set(produced))
            if early:
                raise LayoutError(f"{where}: group {g.name} sees frames {early} before any group has produced them")
            produced.extend(g.frames)
        missing = sorted(set(range(self.num_frames)) - set(produced))
        if missing:
            raise LayoutError(f"{where}: frames {missing} are never produced")
        for count, what in ((self.context_frames, "context_frames"), (self.image_frames, "image_frames")):
            prefix = set(range(count))
            if count and not any(set(self.frames_of(range(n))) == prefix for n in range(1, len(self.groups) + 1)):
                raise LayoutError(f"{where}: {what}={count} does not end on a group boundary")
            if count and not prefix <= set(self.keyframes):
                raise LayoutError(f"{where}: {what}={count} reaches past the plan phase")
        for what, frames in (("terminal", self.terminal), ("midpoint", self.midpoint)):
            if not set(frames) <= set(self.keyframes):
                raise LayoutError(f"{where}: {what} frames {frames} must be produced in the plan phase")
        if self.midpoint and len(self.midpoint) != self.context_frames:
            raise LayoutError(f"{where}: midpoint {self.midpoint} must hold context_frames={self.context_frames} frames")

    def describe(self) -> str:
        return " → ".join(f"{g.name}{list(g.frames)}" for g in self.groups)


def _span(start: int, length: int) -> tuple[int, ...]:
    return tuple(range(start, start + length))


def mmpl_layout(
    num_frames: int = 21,
    *,
    early: int | None = None,
    mid: int | None = None,
    terminal: int = 2,
    image_to_video: bool = False,
    name: str | None = None,
) -> SegmentLayout:
    """The MMPL layout for `num_frames` latents (the paper's t_a = 2, t_b ≈ N/2, t_c = N rule).

    Anchor groups: `early` frames right after the 2 initial frames, `mid` frames from N//2, `terminal` frames at the
    end (defaults: 2, 3, 2 from 17 frames up, smaller anchors for the short segments of tiny models). `early=0` or `mid=0` gives the paper's ablations (without early / midpoint planning); the head and tail
    fill sets take the freed frames. T2V hides the terminal anchors from the head set, as the MMPL checkpoints were
    trained; I2V shows them, and caches the first frame (the image) and frame 1 as separate groups.
    """
    initial = 2
    if early is None:
        early = 2 if num_frames >= 13 else 1
    if mid is None:
        mid = 3 if num_frames >= 17 else 2 if num_frames >= 11 else 1
    mid_start = num_frames // 2 if mid else num_frames // 2 + 1
    init_f = _span(0, initial)
    early_f = _span(initial, early)
    mid_f = _span(mid_start, mid)
    term_f = _span(num_frames - terminal, terminal)
    head_f = tuple(range(initial + early, mid_start))
    tail_f = tuple(range(mid_start + mid, num_frames - terminal))
    if initial + early > mid_start or mid_start + mid > num_frames - terminal or not head_f or not tail_f:
        raise LayoutError(
            f"mmpl_layout: {num_frames} frames cannot hold initial 2, early {early}, mid {mid}, terminal {terminal} "
            "anchors with non-empty head and tail fill sets"
        )
    plan_f = early_f + mid_f + term_f
    anchors = init_f + early_f + mid_f
    if image_to_video:
        groups = (
            FrameGroup("image", (0,), (), PLAN),
            FrameGroup("initial", (1,), (0,), PLAN),
            FrameGroup("plan", plan_f, init_f, PLAN),
            FrameGroup("head", head_f, anchors + term_f, POPULATE),
            FrameGroup("tail", tail_f, anchors + head_f + term_f, POPULATE),
        )
    else:
        groups = (
            FrameGroup("initial", init_f, (), PLAN),
            FrameGroup("plan", plan_f, init_f, PLAN),
            FrameGroup("head", head_f, anchors, POPULATE),
            FrameGroup("tail", tail_f, anchors + head_f + term_f, POPULATE),
        )
    kind = "i2v" if image_to_video else "t2v"
    return SegmentLayout(
        name=name or f"mmpl-{kind}-{num_frames}",
        num_frames=num_frames,
        groups=groups,
        context_frames=initial,
        terminal=term_f,
        image_frames=1 if image_to_video else 0,
        midpoint=mid_f[-initial:] if mid >= initial else (),
    )


def ar_layout(num_frames: int = 13, *, chunk: int = 3, name: str | None = None) -> SegmentLayout:
    """Chunk-wise autoregressive baseline: [0,1], then chunks of `chunk` frames, each seeing every earlier frame
    (the CausVid / Self-Forcing teacher-forcing setup). All groups run in the plan phase: an AR segment is generated
    front to back, and the next segment starts from its last two frames like an MMPL chain."""
    if num_frames < 4 or chunk < 1:
        raise LayoutError(f"ar_layout needs num_frames >= 4 and chunk >= 1, got {num_frames}, {chunk}")
    groups, produced = [FrameGroup("initial", (0, 1), (), PLAN)], [0, 1]
    for start in range(2, num_frames, chunk):
        frames = tuple(range(start, min(start + chunk, num_frames)))
        groups.append(FrameGroup(f"chunk{len(groups)}", frames, tuple(produced), PLAN))
        produced.extend(frames)
    return SegmentLayout(
        name=name or f"ar-{num_frames}", num_frames=num_frames, groups=tuple(groups), context_frames=2,
        terminal=(num_frames - 2, num_frames - 1),
    )


# The layouts of the released MMPL checkpoints (Wan2.1, 21 latents) and the paper's ablations (Table 3).
WAN_T2V = mmpl_layout(21, name="wan-t2v")
WAN_I2V = mmpl_layout(21, image_to_video=True, name="wan-i2v")
WAN_T2V_NO_EARLY = mmpl_layout(21, early=0, name="wan-t2v-no-early")
WAN_T2V_NO_MID = mmpl_layout(21, mid=0, name="wan-t2v-no-mid")

LAYOUTS = {lay.name: lay for lay in (WAN_T2V, WAN_I2V, WAN_T2V_NO_EARLY, WAN_T2V_NO_MID)}


def get_layout(name: str) -> SegmentLayout:
    """A named layout, or `mmpl-t2v-N` / `mmpl-i2v-N` for the generated layout of N latent frames."""
    if name in LAYOUTS:
        return LAYOUTS[name]
    parts = name.split("-")
    if len(parts) == 3 and parts[0] == "mmpl" and parts[1] in ("t2v", "i2v") and parts[2].isdigit():
        return mmpl_layout(int(parts[2]), image_to_video=parts[1] == "i2v")
    if len(parts) == 2 and parts[0] == "ar" and parts[1].isdigit():
        return ar_layout(int(parts[1]))
    raise LayoutError(
        f"unknown layout {name!r}; expected one of {sorted(LAYOUTS)}, mmpl-t2v-N, mmpl-i2v-N or ar-N"
    )
