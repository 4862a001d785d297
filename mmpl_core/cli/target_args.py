"""Loops, keyframe targets and joins in the `mmpl` commands: --loop, --keyframe SEG:ROLE=SOURCE, --noise-init,
--fix-joins, and the join report printed and saved after a video is written."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from .common import CLIError, read_image

_REFERENCE = re.compile(r"(\d+):(\w+)", re.ASCII)
KEYFRAME_HELP = ("SEG:ROLE=SOURCE: hold a keyframe of segment SEG (1-based) while it is planned, so the plan bends "
                 "toward it; ROLE is mid, terminal or a latent index; SOURCE is an image file or SEG2:ROLE2, a "
                 "keyframe of an earlier segment (e.g. 4:terminal=1:mid). Repeatable")


def add_loop_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loop", action="store_true",
                   help="make the video end where it began: the last segment is planned toward the first segment's "
                        "starting frames and the repeated frames are dropped, so it plays in a loop")
    p.add_argument("--keyframe", action="append", default=[], metavar="SEG:ROLE=SOURCE", help=KEYFRAME_HELP)
    p.add_argument("--noise-init", choices=("official", "paper"), default="official",
                   help="form of the Appendix F noise init that --boundary-weight weights: 'official' (edge frames mix "
                        "in their neighbouring anchor's latent) or 'paper' (content frames mix in the noise of the "
                        "planning frames around them, by temporal distance)")


def add_fix_joins_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fix-joins", type=_frames, nargs="?", const=8, default=0, metavar="FRAMES",
                   help="join correction: carry the previous segment's colour statistics into each new segment's "
                        "first FRAMES frames (default 8), fading out (see docs/benchmarks.md for whether it helps)")


def _frames(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of frames >= 0, got {text!r}")
    return int(text)


def role_frame(layout, role: str, what: str) -> int:
    """ROLE of a --keyframe (mid, terminal, a latent index) → the latent frame it names."""
    from ..keyframes import target_frame

    try:
        return target_frame(layout, int(role) if role.isdigit() else role)
    except ValueError as err:
        raise CLIError(f"{what}: {err}") from err


def parse_keyframes(specs: list[str], plan, vae, count: int | None = None):
    """--keyframe values → [(segment, KeyframeTarget)] (segments 0-based), images encoded with `vae`."""
    from ..keyframes import encode_keyframe_image
    from ..plan import KeyframeTarget

    count = len(plan) if count is None else count
    targets = []
    for spec in specs:
        what = f"--keyframe {spec!r}"
        where, sep, source = spec.partition("=")
        match = _REFERENCE.fullmatch(where)
        if not sep or not source or match is None:
            raise CLIError(f"{what}: expected SEG:ROLE=SOURCE, e.g. 3:mid=image.png or 4:terminal=1:mid")
        segment, frame = int(match[1]) - 1, role_frame(plan.layout, match[2], what)
        if not 0 <= segment < count:
            raise CLIError(f"{what}: segment {match[1]} is outside 1..{count}")
        reference = _REFERENCE.fullmatch(source)
        if reference is not None and not Path(source).exists():
            from_segment = int(reference[1]) - 1
            target = KeyframeTarget(frame, source=(from_segment, role_frame(plan.layout, reference[2], what)),
                                    label=f"S{from_segment + 1} {reference[2]}")
        else:
            image = read_image(source, plan.settings.height, plan.settings.width)
            target = KeyframeTarget(frame, encode_keyframe_image(vae, image, frame), label=Path(source).name)
        targets.append((segment, target))
    return targets


def with_keyframes(plan, targets):
    """`plan` with the parsed targets given (errors name the --keyframe value in 1-based terms)."""
    for segment, target in targets:
        try:
            plan = plan.with_target(segment, target)
        except ValueError as err:
            raise CLIError(f"--keyframe for segment {segment + 1}: {err}") from err
    return plan


def report_joins(plan, video, directory: Path, fix_joins: int) -> None:
    """Score every join of the written video, print the report and save it in the plan folder."""
    from ..joins import format_join_report, join_report, save_join_report
    from ..populate import plan_identity

    try:
        scores = join_report(video, plan.layout, len(plan), handoff=plan.settings.handoff, loop=plan.settings.loop,
                             fps=plan.settings.fps)
    except ImportError as err:  # the metrics' optional dependencies (OpenCV, scikit-image)
        print(f"join report skipped: {err}")
        return
    print(format_join_report(scores))
    print(f"wrote {save_join_report(scores, directory, plan_identity(plan), fix_joins)}")


def same_keyframes(plan, targets) -> bool:
    """Whether `plan` was given exactly these targets (a resumed plan folder must match the command)."""
    from dataclasses import replace

    from ..plan import same_targets

    bare = replace(plan, segments=tuple(replace(s, targets=()) for s in plan.segments))
    wanted = with_keyframes(bare, targets)
    return all(same_targets(a, b) for a, b in zip(wanted.segments, plan.segments))
