"""Long-horizon quality benchmark: MMPL, its ablations and the autoregressive baseline on the embedded demo models.

    PYTHONPATH=. .venv/bin/python bench/quality.py [--prompts 5] [--segments 12] [--steps N] [--generators a,b]

The same as `mmpl bench quality` (the protocol, metrics and report live in `mmpl_core/metrics/`, so the installed
command has them too). Generates `--prompts` synthetic-world prompts × `--segments` segments with every generator
(same sampler, steps and seeds), caches the videos under build/quality/videos, scores them per segment with
weight-free metrics, writes bench/results/quality.json, the plots docs/quality_*.png and the Markdown tables
build/quality/tables.md. The last line printed is a JSON object with `color_drift_ratio` and `sharpness_loss_ratio`
(MMPL over AR at the last segment) and `seam_ratio` (MMPL's seam score over its within-segment difference).
"""
from __future__ import annotations

import sys

from mmpl_core.cli.bench_cmd import add_quality_args, run_quality_command, script_main


def main(argv=None) -> int:
    return script_main(add_quality_args, run_quality_command, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
