"""The keyframe strip and editor in a real browser: Debian's Chromium, driven by playwright-core (keyframe_strip.mjs),
against the real ComfyUI of the test suite. scripts/setup_browser.sh installs both (cached); MMPL_SKIP_BROWSER=1
skips these tests. Screenshots of each step go to test-artifacts/browser/; MMPL_UPDATE_SCREENSHOTS=1 also copies the
README's pictures to docs/.
"""
from __future__ import annotations

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
BROWSER_DIR = REPO / ".browser"
README_PICTURES = {"06_editor.png": "keyframe_editor.png", "07_strip.png": "keyframe_strip.png"}
LAYOUT, SEGMENTS, FPS = get_layout("mmpl-t2v-13"), 3, 16  # the example: demo model, 3 segments
# Replace S2's last keyframe: a terminal one, which the bridge hands to S3, so S3 changes too (a mid keyframe
# would leave S3 as it was: a segment's plan only sees the previous segment's bridged terminal keyframes).
EDIT = {"segment": 1, "frame": 12}
REPLACEMENT_COLOUR = (250, 250, 250)

pytestmark = [pytest.mark.comfy, pytest.mark.browser]


@pytest.fixture(scope="session")
def browser_install() -> None:
    if os.environ.get("MMPL_SKIP_BROWSER") == "1":
        pytest.skip("MMPL_SKIP_BROWSER=1: the browser tests are switched off")
    subprocess.run(["bash", str(REPO / "scripts" / "setup_browser.sh")], check=True)


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


def test_browser_keyframe_strip_edit_and_populate(browser_install, comfy_server, tmp_path):
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    roles = keyframe_roles(LAYOUT)
    expect = {
        "segments": SEGMENTS, "captions": expected_captions(), "frames": list(LAYOUT.keyframes), "edit": EDIT,
        "roles": [r for i, r in enumerate(roles.values()) if i == 0 or r != list(roles.values())[i - 1]],
    }
    env = {**os.environ, "COMFY_URL": comfy_server.url, "ARTIFACTS": str(ARTIFACTS), "WORKFLOW": str(WORKFLOW),
           "REPLACEMENT": str(replacement_image(tmp_path / "replacement.png")), "EXPECT": json.dumps(expect),
           "BROWSER_DIR": str(BROWSER_DIR)}
    forget_results(comfy_server)
    try:
        run = subprocess.run(["node", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900)
    finally:
        forget_results(comfy_server)
    print(run.stdout)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\nscreenshots: {ARTIFACTS}"
    result = json.loads((ARTIFACTS / "result.json").read_text())
    for name in ("01_loaded", "02_run1_strips", "03_large_keyframe", "04_editor_replaced", "05_run2_strips",
                 "06_editor", "07_strip"):
        assert Image.open(ARTIFACTS / f"{name}.png").size[0] > 0

    # The re-planned S2 holds the uploaded picture at f6 (through the demo VAE): a bright middle on a dark border.
    keyframe = np.asarray(Image.open(io.BytesIO(comfy_server.client.view(result["replaced_file"], "mmpl", "temp"))))
    centre, border = keyframe[24:40, 24:40].mean(), keyframe[:, :4].mean()
    assert centre > 150 and border < 100 and centre - border > 100, (centre, border)

    if os.environ.get("MMPL_UPDATE_SCREENSHOTS") == "1":
        for shot, picture in README_PICTURES.items():
            shutil.copy(ARTIFACTS / shot, REPO / "docs" / picture)
