"""`mmpl` command line: thin front ends over the engine (arguments in, a call into the core, progress out)."""
from __future__ import annotations

import argparse

from .. import __version__
from . import bench_cmd, estimate_cmd, segment_cmd, train_cmd, video_cmds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmpl", description="MMPL long-video generation over Wan2.1")
    parser.add_argument("--version", action="version", version=f"mmpl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    segment_cmd.register(sub)
    video_cmds.register(sub)
    train_cmd.register(sub)
    estimate_cmd.register(sub)
    bench_cmd.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
