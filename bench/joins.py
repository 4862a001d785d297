"""Join benchmark (issue 19): loop seams, the join scores of the main command's video, join correction with and
without, and the Appendix F noise init in the paper's form against the official form, on the embedded demo models.

    PYTHONPATH=. .venv/bin/python bench/joins.py [--prompts 5] [--segments 12] [--steps N]

The same as `mmpl bench joins` (the logic lives in `mmpl_core/metrics/join_bench.py`). It uses the quality
benchmark's prompts, seeds, metrics and video cache (build/quality/videos), prints Markdown tables and writes
bench/results/joins.json; docs/benchmarks.md quotes them.
"""
from __future__ import annotations

import sys

from mmpl_core.cli.bench_cmd import add_joins_args, run_joins_command, script_main


def main(argv=None) -> int:
    return script_main(add_joins_args, run_joins_command, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
