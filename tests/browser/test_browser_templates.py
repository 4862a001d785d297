"""The real-model templates open in the newest frontend as a user opens them (templates.mjs): every node known,
every widget value kept, no console error; a picture of each. MMPL_UPDATE_SCREENSHOTS=1 writes the pictures to
docs/ (the README's) and, scaled down, as the templates' thumbnails."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((REPO / "example_workflows").glob("mmpl_wan14b_*.json"))
ARTIFACTS = REPO / "test-artifacts" / "browser" / "templates"

pytestmark = [pytest.mark.comfy, pytest.mark.browser]


def test_real_model_templates_open_in_the_newest_frontend(newest_frontend_server):
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    env = {**os.environ, "COMFY_URL": newest_frontend_server.url, "ARTIFACTS": str(ARTIFACTS),
           "TEMPLATES": json.dumps([str(t) for t in TEMPLATES]), "BROWSER_DIR": str(REPO / ".browser")}
    run = subprocess.run(["node", str(Path(__file__).with_name("templates.mjs"))], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    result = json.loads((ARTIFACTS / "result.json").read_text())
    assert set(result["templates"]) == {t.stem for t in TEMPLATES} and not result["errors"]
    if os.environ.get("MMPL_UPDATE_SCREENSHOTS") == "1":
        for template in TEMPLATES:
            picture = Image.open(ARTIFACTS / f"{template.stem}.png").convert("RGB")
            picture.save(REPO / "docs" / f"{template.stem}.png")
            picture.thumbnail((512, 512))
            picture.save(template.with_suffix(".jpg"), quality=90)
