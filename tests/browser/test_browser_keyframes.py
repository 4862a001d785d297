"""The keyframe strip and editor in a real browser: Debian's Chromium, driven by playwright-core (keyframe_strip.mjs),
against the real ComfyUI of the test suite, in three configurations:

- ``classic``: the frontend ComfyUI 0.3.75 brings (1.32.9), classic canvas;
- ``newest-classic``: the newest frontend package from PyPI (pinned in scripts/setup_browser.sh), classic canvas;
- ``newest-nodes2``: the same frontend in Nodes 2.0 (Vue nodes).

Each runs the plan → preview → edit → re-plan → populate flow, then page reloads; ``newest-nodes2`` also runs a re-roll
inside a subgraph in between.
scripts/setup_browser.sh installs what they need (cached); MMPL_SKIP_BROWSER=1 skips them. Screenshots of each step go
to test-artifacts/browser/<configuration>/; MMPL_UPDATE_SCREENSHOTS=1 also copies the README's pictures to docs/.
"""
from __future__ import annotations

import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from mmpl_core.keyframes import keyframe_roles
from mmpl_core.layout import get_layout
from mmpl_core.stitch import keyframe_time

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("keyframe_strip.mjs")
WORKFLOW = REPO / "example_workflows" / "mmpl_plan_edit_populate.json"
ARTIFACTS = REPO / "test-artifacts" / "browser"
BROWSER_DIR = REPO / ".browser"  # scripts/setup_browser.sh: playwright-core, frontend/{static,version}
LAYOUT, SEGMENTS, FPS = get_layout("mmpl-t2v-13"), 3, 16  # the example: demo model, 3 segments
# Replace S2's last keyframe: a terminal one, which the bridge hands to S3, so S3 changes too (a mid keyframe
# would leave S3 as it was: a segment's plan only sees the previous segment's bridged terminal keyframes).
EDIT = {"segment": 1, "frame": 12}
REPLACEMENT_COLOUR = (250, 250, 250)
# configuration → (server fixture, Nodes 2.0, subgraph phase, README pictures: screenshot → docs/ file). The subgraph
# phase costs a third run of the workflow, so only the configuration most unlike the others runs it.
CONFIGS = {
    "classic": ("comfy_server", False, False,
                {"06_editor.png": "keyframe_editor.png", "07_strip.png": "keyframe_strip.png"}),
    "newest-classic": ("newest_frontend_server", False, False, {}),
    "newest-nodes2": ("newest_frontend_server", True, True,
                      {"06_editor.png": "keyframe_editor_nodes2.png", "07_strip.png": "keyframe_strip_nodes2.png"}),
}
STEPS = ("01_loaded", "02_run1_strips", "03_large_keyframe", "04_editor_replaced", "04b_editor_controls",
         "05_run2_strips", "06_editor", "07_strip", "09_reloaded", "10_images_gone")

pytestmark = [pytest.mark.comfy, pytest.mark.browser]


def forget_results(server) -> None:
    """Drop the server's cached node outputs and the Content Populator's finished segments (output/mmpl/cache), so
    that neither this test nor the workflow tests (which run the same example) start from another run's results."""
    requests.post(f"{server.url}/free", json={"unload_models": True, "free_memory": True}, timeout=30).raise_for_status()
    time.sleep(0.5)  # the idle prompt worker wakes up and applies the flags before the next prompt comes
    shutil.rmtree(server.base_dir / "output" / "mmpl" / "cache", ignore_errors=True)


def expected_captions() -> list[list[str]]:
    def seconds(t: float) -> str:
        return f"{round(t, 2):g}s"

    return [[f"f{f} · {seconds(keyframe_time(LAYOUT, k, f, FPS))}" for f in LAYOUT.keyframes] for k in range(SEGMENTS)]


def replacement_image(path: Path) -> Path:
    """What the user uploads: a near-white square on black, larger than the video (the editor fits it to 64×64)."""
    image = np.zeros((96, 128, 3), np.uint8)
    image[16:80, 32:96] = REPLACEMENT_COLOUR
    Image.fromarray(image).save(path)
    return path


@pytest.mark.parametrize("config", list(CONFIGS))
def test_browser_keyframe_strip_edit_and_populate(config, browser_install, request, tmp_path):
    fixture, nodes2, subgraph, pictures = CONFIGS[config]
    server = request.getfixturevalue(fixture)
    version = ((BROWSER_DIR / "frontend" / "version").read_text().strip() if fixture == "newest_frontend_server"
               else importlib.metadata.version("comfyui-frontend-package"))
    artifacts = ARTIFACTS / config
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    roles = list(keyframe_roles(LAYOUT).values())
    expect = {
        "segments": SEGMENTS, "captions": expected_captions(), "frames": list(LAYOUT.keyframes), "edit": EDIT,
        "roles": [r for i, r in enumerate(roles) if i == 0 or r != roles[i - 1]],
    }
    env = {**os.environ, "COMFY_URL": server.url, "ARTIFACTS": str(artifacts), "WORKFLOW": str(WORKFLOW),
           "REPLACEMENT": str(replacement_image(tmp_path / "replacement.png")), "EXPECT": json.dumps(expect),
           "BROWSER_DIR": str(BROWSER_DIR), "NODES2": "1" if nodes2 else "0", "FRONTEND_VERSION": version,
           "SUBGRAPH": "1" if subgraph else "0"}
    forget_results(server)
    start = time.monotonic()
    try:
        run = subprocess.run(["node", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=1200)
    finally:
        forget_results(server)
    print(f"{config} (frontend {version}): {time.monotonic() - start:.0f} s\n{run.stdout}")
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\nscreenshots: {artifacts}"
    result = json.loads((artifacts / "result.json").read_text())
    assert result["version"] == version and result["vue"] is nodes2
    for name in STEPS + (("08_subgraph",) if subgraph else ()):
        assert Image.open(artifacts / f"{name}.png").size[0] > 0

    # The re-planned S2 holds the uploaded picture at f12 (through the demo VAE): a bright middle on a dark border.
    keyframe = np.asarray(Image.open(io.BytesIO(server.client.view(result["replaced_file"], "mmpl", "temp"))))
    centre, border = keyframe[24:40, 24:40].mean(), keyframe[:, :4].mean()
    assert centre > 150 and border < 100 and centre - border > 100, (centre, border)

    if os.environ.get("MMPL_UPDATE_SCREENSHOTS") == "1":
        for shot, picture in pictures.items():
            shutil.copy(artifacts / shot, REPO / "docs" / picture)
