"""The join report: a score for every join of a stitched long video, with the quality benchmark's definitions.

- seam: the frame difference across the join over the median frame difference inside the two segments it connects
  (`metrics.temporal.seams`; 1 = as smooth as ordinary motion).
- seam_block: the same over the median at the latent-block boundaries inside those segments. A decoder that draws
  each latent as its own block of 4 frames (the demo's codec) makes every block boundary, joins included, jump more
  than the frames inside a block; this compares like with like. With a smooth decoder (Wan's VAE) the two agree.
- colour_step: the CIEDE2000 distance between the mean colours of the 4 frames before and after the join
  (`metrics.colour.join_colour_steps`; 2.3 ≈ just noticeable).

A loop adds the join from the last frame back to the first. A join is flagged when seam_block or colour_step passes
its threshold. The report is saved as joins.json in the plan folder, keyed by the plan it describes.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .layout import SegmentLayout
from .stitch import kept_pixel_frames, overlap_pixel_frames
from .vae import TEMPORAL_STRIDE

REPORT_FILE = "joins.json"


@dataclass(frozen=True)
class JoinThresholds:
    """When a join is flagged: seam_block above `seam` (the benchmark's seam threshold) or a colour step above
    `colour_step` ΔE00."""

    seam: float = 2.0
    colour_step: float = 5.0


@dataclass(frozen=True)
class JoinScore:
    """One join: segment `before` (0-based) ends and segment `after` starts (0 for a loop's way back) at stitched
    frame `frame` (0 for the loop's join)."""

    before: int
    after: int
    frame: int
    seam: float
    seam_block: float
    colour_step: float
    flagged: bool

    @property
    def name(self) -> str:
        return f"S{self.before + 1}→S{self.after + 1}"


def segment_bounds(layout: SegmentLayout, num_segments: int, handoff: str = "terminal",
                   loop: bool = False) -> list[tuple[int, int]]:
    """[start, stop) of each segment's frames in the stitched video (as `stitch_stream` yields them)."""
    kept, overlap = kept_pixel_frames(layout, handoff), overlap_pixel_frames(layout)
    stops = [kept + (kept - overlap) * k for k in range(num_segments)]
    if loop:
        stops[-1] -= overlap
    return list(zip([0] + stops[:-1], stops))


def join_report(frames: np.ndarray, layout: SegmentLayout, num_segments: int, *, handoff: str = "terminal",
                loop: bool = False, fps: float = 16.0,
                thresholds: JoinThresholds = JoinThresholds()) -> list[JoinScore]:
    """Scores of every join of a stitched video, uint8 [T, H, W, 3] (plus the way back from the end, for a loop).

    Each join is scored on the frames of its two segments alone (the seam's medians only look there), so memory
    stays two segments' worth whatever the length."""
    from .metrics.bins import TimeBins, check_frames
    from .metrics.colour import join_colour_steps
    from .metrics.temporal import seams

    bounds = segment_bounds(layout, num_segments, handoff, loop)
    check_frames(frames, TimeBins(tuple(bounds), fps))
    pairs = [(k, k + 1) for k in range(num_segments - 1)] + ([(num_segments - 1, 0)] if loop else [])
    scores = []
    for before, after in pairs:
        (a, b), (c, d) = bounds[before], bounds[after]
        video = np.concatenate([frames[a:b], frames[c:d]])
        # Stitched segments after the first start on a block boundary one frame past a multiple of 4 and keep 4k + 1
        # frames (a loop's last keeps 4k - 1), so blocks start at 0, 4, 8, … unless the first segment comes first.
        bins = TimeBins(((0, b - a), (b - a, len(video))), fps, block=TEMPORAL_STRIDE, first_block=1 if a == 0 else 0)
        seam, step = seams(video, bins), float(join_colour_steps(video, bins, TEMPORAL_STRIDE)[0])
        values = float(seam["score"][0]), float(seam["block_score"][0]), step
        flagged = values[1] > thresholds.seam or values[2] > thresholds.colour_step
        scores.append(JoinScore(before, after, c, *values, flagged=bool(flagged)))
    return scores


def format_join_report(scores: list[JoinScore], thresholds: JoinThresholds = JoinThresholds()) -> str:
    """A few lines of text: one per join, then the means."""
    if not scores:
        return "join report: one segment, no joins"
    lines = [f"join report ({len(scores)} joins; flagged: seam vs latent boundaries > {thresholds.seam:g} or colour "
             f"step > {thresholds.colour_step:g} ΔE00)",
             f"{'join':<9} {'frame':>6} {'seam':>6} {'vs blocks':>9} {'ΔE00 step':>9}"]
    for s in scores:
        lines.append(f"{s.name:<9} {s.frame:>6} {s.seam:>6.2f} {s.seam_block:>9.2f} {s.colour_step:>9.2f}"
                     + ("  ◀ flagged" if s.flagged else ""))
    mean = lambda name: float(np.mean([getattr(s, name) for s in scores]))  # noqa: E731
    lines.append(f"{'mean':<9} {'':>6} {mean('seam'):>6.2f} {mean('seam_block'):>9.2f} {mean('colour_step'):>9.2f}"
                 f"  ({sum(s.flagged for s in scores)} flagged)")
    return "\n".join(lines)


def save_join_report(scores: list[JoinScore], directory, plan_id: str, fix_joins: int = 0) -> Path:
    """joins.json in a plan folder: the scores of the video last written from the plan `plan_id`."""
    path = Path(directory) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"plan": plan_id, "fix_joins": fix_joins, "joins": [{**asdict(s), "join": s.name} for s in scores]}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def load_join_report(directory, plan_id: str) -> list[JoinScore] | None:
    """The saved scores of plan `plan_id`, or None when there are none (or they describe another plan)."""
    path = Path(directory) / REPORT_FILE
    try:
        doc = json.loads(path.read_text())
        if doc.get("plan") != plan_id:
            return None
        fields = JoinScore.__dataclass_fields__
        return [JoinScore(**{k: v for k, v in entry.items() if k in fields}) for entry in doc["joins"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
