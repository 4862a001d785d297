"""bench/gpu_memory.py in its CPU smoke configuration: the unconstrained and the budgeted run (streamed blocks, KV
cache in CPU memory) through the same code as on a GPU, its tables and its last JSON line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_memory_benchmark_cpu_smoke(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_memory.py"), "--device", "cpu", "--model", "micro",
         "--resolution", "32", "48", "--steps", "1", "--dtype", "float32", "--kv-cache", "cpu",
         "--blocks-on-device", "0", "--json", str(tmp_path / "figures.json")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["attention"] == "sdpa" and summary["errors"] == [None, None]
    assert len(summary["predicted_bytes"]) == 2 and summary["peaks_gib"] == [None, None]  # no allocator on the CPU
    budgeted = "| 24 GiB | weights 0/2 blocks resident, rest streamed, KV cache on cpu, CFG batched | n/a (CPU) |"
    assert any(line.startswith(budgeted) for line in lines)
    figures = json.loads((tmp_path / "figures.json").read_text())
    for run in figures["runs"]:
        assert set(run["groups"]) == {"initial", "plan", "head", "tail"}
        assert all(g["s_per_forward"] > 0 and g["predicted_s"] >= g["flop_bound_s"] > 0 for g in run["groups"].values())
