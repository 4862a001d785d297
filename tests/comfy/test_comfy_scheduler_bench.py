"""bench/comfy_scheduler.py in a small configuration: it runs through its own ComfyUI server and reports figures
for both device counts from the nodes' own run summaries."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfy
REPO = Path(__file__).resolve().parents[2]


def test_comfy_scheduler_benchmark_small_configuration(comfy_install, tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "comfy_scheduler.py"), "--segments", "3", "--steps", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures["runs"]) == {"cpu", "cpu,cpu"}
    for run in figures["runs"].values():
        assert run["tasks"] == 3 + 2 + 3 * 2 and not run["retries"]  # 3 plans, 2 bridges, 3 heads and tails
        assert 0.5 < run["makespan"] / run["simulated"] < 3.0
    assert figures["speedup_2_devices"] > 0
