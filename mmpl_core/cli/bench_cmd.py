"""`mmpl bench quality` and `mmpl bench joins`: the long-horizon quality benchmark (MMPL against autoregressive
generation) and the join benchmark on its protocol. bench/quality.py and bench/joins.py run them as scripts."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import CLIError


def register(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks")
    kinds = bench.add_subparsers(dest="bench", required=True)
    p = kinds.add_parser("quality", help="long-horizon quality: MMPL, its ablations and the AR baseline on the demo "
                                         "models, scored by weight-free metrics per segment")
    add_quality_args(p)
    p.set_defaults(func=run_quality_command)
    p = kinds.add_parser("joins", help="loop seams, the main command's join scores, join correction and the Appendix F "
                                       "noise init forms, on the quality benchmark's protocol")
    add_joins_args(p)
    p.set_defaults(func=run_joins_command)


def add_joins_args(p: argparse.ArgumentParser) -> None:
    _add_protocol_args(p, prompts_help="synthetic-world prompts (as the quality benchmark)")
    p.add_argument("--out", type=Path, default=Path("bench/results/joins.json"), help="the result JSON")


def _add_protocol_args(p: argparse.ArgumentParser, prompts_help: str) -> None:
    """The quality benchmark's protocol (prompts, segments, sampler steps, scenes), video cache and CPU threads."""
    p.add_argument("--prompts", type=int, default=5, help=prompts_help)
    p.add_argument("--segments", type=int, default=12, help="segments per video")
    p.add_argument("--steps", type=int, help="sampler steps (default: the demo model's, 20)")
    p.add_argument("--scene-seed", type=int, default=100, help="seed of the first prompt's scene")
    p.add_argument("--cache-dir", type=Path, default=Path("build/quality/videos"),
                   help="cache of generated videos, shared by both benchmarks (re-runs regenerate nothing)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the CPU is shared)")


def _set_threads(args: argparse.Namespace) -> None:
    import torch

    if args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)


def run_joins_command(args: argparse.Namespace) -> int:
    from ..metrics.join_bench import VARIANTS, run_joins
    from ..metrics.protocol import BenchConfig

    _set_threads(args)
    try:
        config = BenchConfig(prompts=args.prompts, segments=args.segments, steps=args.steps,
                             scene_seed=args.scene_seed, generators=(*VARIANTS, "mmpl_loop"))
        result = run_joins(config, cache_dir=None if args.no_cache else args.cache_dir, out=args.out)
    except (ImportError, ValueError) as err:
        raise CLIError(str(err)) from err
    print(result["tables"])
    print(f"wrote {args.out}; {result['seconds']:.0f} s; models: {result['config']['models']}")
    return 0


def add_quality_args(p: argparse.ArgumentParser) -> None:
    from ..metrics.protocol import DEFAULT_GENERATORS

    _add_protocol_args(p, prompts_help="synthetic-world prompts (scene seeds from --scene-seed)")
    p.add_argument("--generators", default=",".join(DEFAULT_GENERATORS),
                   help=f"comma-separated subset of {','.join(DEFAULT_GENERATORS)}")
    p.add_argument("--out", type=Path, default=Path("bench/results/quality.json"), help="the result JSON")
    p.add_argument("--plots-dir", type=Path, default=Path("docs"), help="where the PNG plots go")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--tables", type=Path, default=Path("build/quality/tables.md"), help="the Markdown tables")


def run_quality_command(args: argparse.Namespace) -> int:
    from ..metrics.benchmark import final_line, run_quality
    from ..metrics.protocol import BenchConfig

    _set_threads(args)
    names = tuple(n.strip() for n in args.generators.split(",") if n.strip())
    try:
        config = BenchConfig(prompts=args.prompts, segments=args.segments, steps=args.steps,
                             scene_seed=args.scene_seed, generators=names)
    except ValueError as err:
        raise CLIError(str(err)) from err
    try:
        result = run_quality(config, out=args.out, plots_dir=None if args.no_plots else args.plots_dir,
                             cache_dir=None if args.no_cache else args.cache_dir, tables=args.tables)
    except ImportError as err:
        raise CLIError(str(err)) from err
    print(result["tables"])
    print(f"wrote {args.out}" + ("" if args.no_plots else f" and plots in {args.plots_dir}")
          + f"; {result['seconds']['total']:.0f} s in all ({result['seconds']['videos']:.0f} s generating, "
            f"{result['seconds']['metrics']:.0f} s scoring)")
    print(final_line(result))
    return 0


def script_main(add_args, run, description: str, argv=None) -> int:
    """A benchmark as a script (bench/*.py): the same arguments and run as its `mmpl bench` command."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CLIError as err:
        print(err.code, file=sys.stderr)
        return 2
