"""bench/scheduler.py end to end in a small configuration (2 real segments, 1 step): real runs on worker processes,
the simulated tables and the predicted GPU table, and the last JSON line with the issue's keys."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_scheduler_benchmark_small_configuration():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scheduler.py"), "--configs", "demo", "--segments-real", "2",
         "--steps", "1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert {"max_ratio_to_bound", "speedup_4w_12seg", "real_vs_sim_2w"} <= summary.keys()
    assert set(summary) >= {"demo", "predicted_14B_h100"}
    for name in ("demo", "predicted_14B_h100"):
        figures = summary[name]
        assert figures["max_ratio_to_bound"] >= figures["max_ratio_to_start_aware_bound"] >= 1.0 - 1e-9
        assert 1.0 < figures["speedup_4w_12seg"] <= 4.0 + 1e-9  # 4 devices: at most 4×
        assert figures["speedup_8w_12seg"] >= figures["speedup_4w_12seg"] - 1e-9
    assert 0.9 < summary["demo"]["real_vs_sim_2w"] < 3.0  # real runs pay the coordinator's overhead on top
    # both modes, 4 and 12 segments, 1/2/4/8 workers, for the demo and the prediction
    assert sum(line.startswith(("| throughput |", "| memory |")) for line in lines) == 2 * 16
