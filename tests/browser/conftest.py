"""Fixtures of the browser tests: the set-up (scripts/setup_browser.sh: Chromium, playwright-core, the newest ComfyUI
frontend) and a second ComfyUI server that serves that frontend with --front-end-root (the session's `comfy_server`
serves the frontend ComfyUI 0.3.75 brings)."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from comfy_fixtures import REPO, ComfyServer, prepare_base_dir, serve

BROWSER_DIR = REPO / ".browser"
FRONTEND = BROWSER_DIR / "frontend"  # .../static: comfyui-frontend-package's files; .../version: which one


@pytest.fixture(scope="session")
def browser_install() -> None:
    if os.environ.get("MMPL_SKIP_BROWSER") == "1":
        pytest.skip("MMPL_SKIP_BROWSER=1: the browser tests are switched off")
    subprocess.run(["bash", str(REPO / "scripts" / "setup_browser.sh")], check=True)


def first_frame(path) -> None:
    """The I2V template's first frame: an evening sky over the sea (832×480), drawn."""
    import numpy as np
    from PIL import Image

    y = np.linspace(0, 1, 480)[:, None, None]
    sky = np.array([250, 170, 110]) * (1 - y / 0.55) + np.array([90, 60, 120]) * (y / 0.55)
    sea = np.array([30, 60, 110]) * (1 - (y - 0.55)) + np.array([10, 25, 60]) * (y - 0.55)
    image = np.where(y < 0.55, sky, sea) * np.ones((1, 832, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="session")
def newest_frontend_server(browser_install, comfy_install, tmp_path_factory) -> Iterator[ComfyServer]:
    """ComfyUI 0.3.75 serving the pinned newer frontend, on its own base directory (ComfyUI empties its temp folder
    when it starts, so it must not share one with `comfy_server`)."""
    from models import populate_models

    base = prepare_base_dir(tmp_path_factory.mktemp("comfy_newest_frontend"))
    populate_models(base / "models")  # the templates' files are there, as on a user's machine
    first_frame(base / "input" / "mmpl_first_frame.png")
    # umT5-XXL has no tiny stand-in (its width is fixed); an empty file under its name lets Load CLIP list it
    (base / "models" / "text_encoders").mkdir(parents=True, exist_ok=True)
    (base / "models" / "text_encoders" / "umt5_xxl_fp8_e4m3fn_scaled.safetensors").touch()
    try:
        with serve(base, extra_args=("--front-end-root", str(FRONTEND / "static"))) as server:
            yield server
    except RuntimeError as err:
        pytest.fail(str(err))
