"""Fixtures of the browser tests: the set-up (scripts/setup_browser.sh: Chromium, playwright-core, the newest ComfyUI
frontend) and a second ComfyUI server that serves that frontend with --front-end-root (the session's `comfy_server`
serves the frontend ComfyUI 0.3.75 brings)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from comfy_fixtures import PACK, PYTHON, REPO, ComfyServer, log_tail, stop_group

BROWSER_DIR = REPO / ".browser"
FRONTEND = BROWSER_DIR / "frontend"  # .../static: comfyui-frontend-package's files; .../version: which one
STARTUP_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def browser_install() -> None:
    if os.environ.get("MMPL_SKIP_BROWSER") == "1":
        pytest.skip("MMPL_SKIP_BROWSER=1: the browser tests are switched off")
    subprocess.run(["bash", str(REPO / "scripts" / "setup_browser.sh")], check=True)


@pytest.fixture(scope="session")
def newest_frontend_server(browser_install, comfy_install, tmp_path_factory) -> Iterator[ComfyServer]:
    """ComfyUI 0.3.75 serving the pinned newer frontend, on its own base directory (ComfyUI empties its temp folder
    when it starts, so it must not share one with `comfy_server`)."""
    import requests
    from client import ComfyClient
    from comfy_fixtures import free_port

    base = tmp_path_factory.mktemp("comfy_newest_frontend")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK).symlink_to(REPO, target_is_directory=True)
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = base / "server.log"
    command = [
        str(PYTHON), str(comfy_install / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
        "--disable-auto-launch", "--disable-api-nodes", "--base-directory", str(base),
        "--database-url", "sqlite:///:memory:", "--front-end-root", str(FRONTEND / "static"),
    ]
    start = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=base, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with rc={process.returncode} while starting:\n{log_tail(log_path)}")
            if time.monotonic() - start > STARTUP_TIMEOUT_S:
                pytest.fail(f"ComfyUI did not answer within {STARTUP_TIMEOUT_S} s:\n{log_tail(log_path)}")
            try:
                if requests.get(url + "/system_stats", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        yield ComfyServer(url, base, log_path, base / "models", ComfyClient(url), time.monotonic() - start)
    finally:
        stop_group(process)

