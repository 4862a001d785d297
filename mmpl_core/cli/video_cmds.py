"""`mmpl generate`, `mmpl plan`, `mmpl populate`, `mmpl edit`: long videos with plans kept on disk."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .common import CLIError, add_model_args, add_sampler_args, build_pipeline, read_image, sampler_config
from .placement_args import add_kv_dtype_arg
from .schedule_args import add_schedule_args, check_schedule_args, make_pool, uses_workers
from .target_args import (
    add_fix_joins_arg, add_loop_target_args, parse_keyframes, report_joins, same_keyframes, with_keyframes,
)


def register(sub) -> None:
    for name, helptext, func in (
        ("generate", "plan and populate a long video, write an mp4 and a keyframe contact sheet", run_generate),
        ("plan", "plan a long video (keyframes only) into a plan folder and a contact sheet", run_plan),
    ):
        p = sub.add_parser(name, help=helptext)
        add_model_args(p)
        add_sampler_args(p)
        p.add_argument("--prompt", action="append", required=True,
                       help="the prompt; repeat once per segment for per-segment prompts")
        p.add_argument("--image", help="first frame for image-to-video (use an i2v layout, e.g. --layout mmpl-i2v-21)")
        p.add_argument("--segments", type=int, default=4, help="number of segments")
        p.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="default: the model's")
        p.add_argument("--fps", type=int, default=16)
        p.add_argument("--bridge", choices=("vae", "naive"), default="vae")
        p.add_argument("--color-anchor", type=float, default=0.0, help="0 (off) … 1: hold colours near segment 1's")
        p.add_argument("--boundary-weight", type=float, default=0.0, help="paper Appendix F noise init weight")
        add_kv_dtype_arg(p)
        add_loop_target_args(p)
        p.add_argument("--plan-dir", type=Path, help="plan folder (default: next to --out, or ./plan)")
        add_schedule_args(p, workers=name == "generate")
        if name == "generate":
            p.add_argument("--out", type=Path, required=True, help="the mp4 to write")
            p.add_argument("--gif", type=Path, help="also write the video as an animated GIF (e.g. for a README)")
            add_fix_joins_arg(p)
        else:
            p.add_argument("--out", type=Path, help="optional: where --plan-dir defaults from")
        p.set_defaults(func=func)

    p = sub.add_parser("populate", help="populate a planned video (all or some segments) and write the mp4")
    add_model_args(p)
    p.add_argument("--plan-dir", type=Path, required=True)
    p.add_argument("--segments", help="1-based segment numbers to populate, e.g. 2,3 (default: all)")
    p.add_argument("--out", type=Path, help="the mp4 to write once every segment is populated")
    add_fix_joins_arg(p)
    p.set_defaults(func=run_populate)

    p = sub.add_parser("edit", help="edit a plan (replace a keyframe, lock, re-roll, change a prompt) and re-plan")
    add_model_args(p)
    p.add_argument("--plan-dir", type=Path, required=True)
    p.add_argument("--segment", type=int, required=True, help="1-based segment number")
    p.add_argument("--frame", type=int, help="latent index of the keyframe to replace (with --image)")
    p.add_argument("--image", help="image for the keyframe")
    p.add_argument("--lock", action="store_true", help="keep this segment's plan when re-planning")
    p.add_argument("--unlock", action="store_true")
    p.add_argument("--reroll", type=int, metavar="SEED", help="re-plan this segment with a new seed")
    p.add_argument("--set-prompt", help="give this segment a new prompt")
    p.add_argument("--no-replan", action="store_true", help="only record the edit")
    p.set_defaults(func=run_edit)


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr)


def _settings(args):
    from ..plan import GenerationSettings
    from ..schedule import MODES

    try:
        return GenerationSettings(
            seed=args.seed, height=args.size[0], width=args.size[1], sampler=sampler_config(args), fps=args.fps,
            bridge=args.bridge, color_anchor=args.color_anchor, boundary_weight=args.boundary_weight,
            handoff=MODES[args.mode], cfg_branches=args.cfg_branches, kv_dtype=args.kv_dtype,
            noise_init=args.noise_init, loop=args.loop,
        )
    except ValueError as err:
        raise CLIError(str(err)) from err


def _store(args):
    from ..plan_store import PlanStore

    plan_dir = args.plan_dir or (args.out.with_suffix(".plan") if args.out else Path("plan"))
    return PlanStore(plan_dir)


def _load(store, pipe):
    from ..plan_store import PlanFileError

    try:
        return store.load(expected_fingerprint=pipe.fingerprint, expected_latent_shape=None)
    except PlanFileError as err:
        raise CLIError(str(err)) from err


def _open_plan(args, pipe, store):
    """The plan in the plan folder (checked to match the arguments), or a new, unplanned one."""
    settings = _settings(args)
    if store.exists():
        plan = _load(store, pipe)
        same = plan.settings == settings and len(plan) == args.segments and (
            [s.prompt for s in plan.segments] == (args.prompt * args.segments if len(args.prompt) == 1 else args.prompt)
        ) and same_keyframes(plan, parse_keyframes(args.keyframe, plan, pipe.vae))
        if not same:
            raise CLIError(f"{store.directory} holds another plan (settings, prompts or segment count differ); "
                           "choose another --plan-dir, or use `mmpl populate` / `mmpl edit` on it")
        print(f"resuming the plan in {store.directory}: {plan.statuses()}", file=sys.stderr)
        return plan
    image = read_image(args.image, settings.height, settings.width) if args.image else None
    try:
        plan = pipe.new_plan(args.prompt, args.segments, settings, image)
    except ValueError as err:
        raise CLIError(str(err)) from err
    return with_keyframes(plan, parse_keyframes(args.keyframe, plan, pipe.vae))


def _plan_phase(args, pipe, store, seconds):
    plan = _open_plan(args, pipe, store)
    start = next((k for k, s in enumerate(plan.statuses()) if s == "empty"), len(plan))
    with _progress(pipe.steps_per_segment(plan, "plan") * (len(plan) - start), "planning") as bar:
        plan = pipe.plan(plan, start=start, on_step=lambda: bar.update(1),
                         on_segment=lambda k, p: store.save(p), seconds=seconds)
    store.save(plan)
    return plan


def _write_contact_sheet(pipe, plan, path: Path) -> Path:
    from ..keyframes import contact_sheet
    from ..video_io import write_png

    rows = [pipe.keyframe_images(plan, k) for k in range(len(plan)) if plan.segments[k].latents is not None]
    return write_png(contact_sheet(rows, plan.layout, plan.settings.fps, plan.layout.keyframes,
                                   handoff=plan.settings.handoff), path)


def _populate_and_write(pipe, plan, store, out: Path | None, segments=None, seconds=None, gif: Path | None = None,
                        fix_joins: int = 0):
    from ..populate import decode_segments
    from ..video_io import to_uint8_frames

    seconds = {} if seconds is None else seconds
    todo = [k for k in (segments if segments is not None else range(len(plan))) if plan.statuses()[k] != "populated"]
    start = time.perf_counter()
    with _progress(pipe.steps_per_segment(plan, "populate") * len(todo), "populating") as bar:
        plan = pipe.populate(plan, segments=todo, on_step=lambda: bar.update(1), on_segment=lambda k, p: store.save(p))
    seconds["populate"] = time.perf_counter() - start
    if out is None or any(s != "populated" for s in plan.statuses()):
        return plan
    start = time.perf_counter()
    parts = dict(enumerate(to_uint8_frames(part) for part in decode_segments(plan, pipe.vae)))
    seconds["decode"] = time.perf_counter() - start
    _write_video(plan, parts, out, gif, fix_joins, store.directory)
    return plan


def _interruptible(func):
    def wrapper(args):
        try:
            return func(args)
        except KeyboardInterrupt:
            print("\ninterrupted: finished segments are saved in the plan folder; run the command again to resume",
                  file=sys.stderr)
            return 130

    return wrapper


def _report(seconds: dict[str, float], total: float) -> None:
    parts = ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
    print(f"time: {total:.1f} s" + (f" ({parts})" if parts else ""))


@_interruptible
def run_generate(args) -> int:
    """Plan, populate and decode as one task graph: populating starts as soon as a segment's plan exists."""
    from ..schedule import ScheduleError, run_plan
    from ..schedule.graph import build_graph

    t0 = time.perf_counter()
    check_schedule_args(args)
    pipe, store = build_pipeline(args), _store(args)
    plan = _open_plan(args, pipe, store)
    graph = build_graph(plan)
    steps = graph.denoising_steps(plan.settings.sampler.steps)
    with _progress(sum(steps.values()), "generating") as bar:
        pool = make_pool(args, pipe, on_step=lambda: bar.update(1))
        in_process = not uses_workers(args)
        try:
            result = run_plan(
                plan, pool, pipe.prompt_fn(plan.settings.sampler), max_retries=args.max_retries,
                on_segment=lambda k, p: store.save(p),
                on_task=None if in_process else lambda task, _: bar.update(steps[task.name]),
            )
        except ScheduleError as err:
            raise CLIError(str(err)) from err
        finally:
            pool.close()
    plan = result.plan
    store.save(plan)
    print(f"wrote {_write_contact_sheet(pipe, plan, args.out.with_suffix('.keyframes.png'))}")
    _write_video(plan, result.videos, args.out, args.gif, args.fix_joins, store.directory)
    report = result.report
    print(f"scheduled {len(graph)} tasks on {report.workers} worker(s), policy {report.policy}; "
          f"makespan {report.makespan:.1f} s" + (f"; retried: {', '.join(report.retries)}" if report.retries else ""))
    _report({}, time.perf_counter() - t0)
    return 0


def _write_video(plan, videos: dict, out: Path, gif: Path | None, fix_joins: int, plan_dir: Path) -> None:
    """Stitch decoded segments (uint8 [T, H, W, 3] each) in order, dropping the frames each shares with the one
    before (and, in a loop, the last one's repeat of the first), write the mp4 (and the GIF), and report the joins."""
    import torch

    from ..stitch import stitch_stream
    from ..video_io import write_mp4

    views = (torch.from_numpy(videos[k]).permute(3, 0, 1, 2) for k in range(len(plan)))
    parts = stitch_stream(views, plan.layout, loop=plan.settings.loop, fix_joins=fix_joins)
    video = np.concatenate([part.permute(1, 2, 3, 0).numpy() for part in parts])
    write_mp4(video, out, fps=plan.settings.fps)
    print(f"wrote {out}: {len(video)} frames, {len(video) / plan.settings.fps:.1f} s at {plan.settings.fps} fps")
    if gif is not None:
        from ..video_io import write_gif

        print(f"wrote {write_gif(video, gif, fps=plan.settings.fps)}")
    report_joins(plan, video, plan_dir, fix_joins)


@_interruptible
def run_plan(args) -> int:
    t0 = time.perf_counter()
    pipe, store, seconds = build_pipeline(args), _store(args), {}
    plan = _plan_phase(args, pipe, store, seconds)
    sheet = _write_contact_sheet(pipe, plan, store.directory / "keyframes.png")
    print(f"planned {len(plan)} segments into {store.directory}; contact sheet {sheet}")
    _report(seconds, time.perf_counter() - t0)
    return 0


def _segment_numbers(text: str | None, count: int) -> list[int] | None:
    from ..plan import parse_segment_selection

    try:
        return None if text is None else parse_segment_selection(text, count)
    except ValueError as err:
        raise CLIError(f"--segments: {err}") from err


@_interruptible
def run_populate(args) -> int:
    t0 = time.perf_counter()
    pipe, store = build_pipeline(args), _store(args)
    plan = _load(store, pipe)
    seconds: dict[str, float] = {}
    _populate_and_write(pipe, plan, store, args.out, _segment_numbers(args.segments, len(plan)), seconds,
                        fix_joins=args.fix_joins)
    _report(seconds, time.perf_counter() - t0)
    return 0


@_interruptible
def run_edit(args) -> int:
    from ..keyframes import encode_keyframe_image

    pipe, store = build_pipeline(args), _store(args)
    plan = _load(store, pipe)
    k = args.segment - 1
    if not 0 <= k < len(plan):
        raise CLIError(f"--segment {args.segment} outside 1..{len(plan)}")
    replan_from = None
    try:
        if args.image is not None or args.frame is not None:
            if args.image is None or args.frame is None:
                raise CLIError("replacing a keyframe needs both --frame and --image")
            image = read_image(args.image, plan.settings.height, plan.settings.width)
            plan = plan.with_keyframe(k, args.frame, encode_keyframe_image(pipe.vae, image, args.frame))
            replan_from = k + 1
        if args.set_prompt is not None:
            plan, replan_from = plan.with_prompt(k, args.set_prompt), k
        if args.reroll is not None:
            plan, replan_from = plan.reroll(k, args.reroll), k
        if args.lock or args.unlock:
            plan = plan.lock(k, args.lock)
    except (ValueError, IndexError) as err:
        raise CLIError(str(err)) from err
    if replan_from is not None and not args.no_replan and replan_from < len(plan):
        with _progress(pipe.steps_per_segment(plan, "plan") * (len(plan) - replan_from), "re-planning") as bar:
            plan = pipe.plan(plan, start=replan_from, on_step=lambda: bar.update(1), on_segment=lambda i, p: store.save(p))
    store.save(plan)
    sheet = _write_contact_sheet(pipe, plan, store.directory / "keyframes.png")
    print(f"edited segment {args.segment}; plan {plan.statuses()}; contact sheet {sheet}")
    return 0
