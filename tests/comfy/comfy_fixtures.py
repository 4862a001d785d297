"""Fixtures for the tests against a real ComfyUI 0.3.75 (scripts/setup_comfy.sh puts it in .comfy/ComfyUI), shared
by tests/comfy/ and tests/browser/ through tests/conftest.py.

One server per test session, started on a free port with a throw-away base directory whose
``custom_nodes/mmpl_long_video`` is a symlink to this checkout. MMPL_SKIP_COMFY=1 skips every test that uses them.
The HTTP client (requests, websocket-client: installed by setup_comfy.sh) is imported only when a server starts.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from client import ComfyClient

REPO = Path(__file__).resolve().parents[2]
COMFY_DIR = REPO / ".comfy" / "ComfyUI"
PYTHON = REPO / ".venv" / "bin" / "python"
PACK = "mmpl_long_video"
STARTUP_TIMEOUT_S = 120


@dataclass
class ComfyServer:
    url: str
    base_dir: Path
    log_path: Path
    models_dir: Path
    client: ComfyClient
    startup_seconds: float

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def log_tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (ComfyUI takes ~2 s to exit); SIGKILL it after 30 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def comfy_install() -> Path:
    """The ComfyUI tree, set up (or checked, in well under a second) by scripts/setup_comfy.sh."""
    if os.environ.get("MMPL_SKIP_COMFY") == "1":
        pytest.skip("MMPL_SKIP_COMFY=1: the real-ComfyUI tests are switched off")
    subprocess.run(["bash", str(REPO / "scripts" / "setup_comfy.sh")], check=True)
    return COMFY_DIR


def prepare_base_dir(base: Path) -> Path:
    """A server's --base-directory: the pack linked in, the first-run tutorial marked done, nothing else."""
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / PACK).symlink_to(REPO, target_is_directory=True)
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    return base


@pytest.fixture(scope="session")
def comfy_base_dir(tmp_path_factory) -> Path:
    return prepare_base_dir(tmp_path_factory.mktemp("comfy_base"))


@pytest.fixture(scope="session")
def comfy_models(comfy_base_dir) -> Path:
    """The server's models folder, filled by tests/comfy/models.py before the server starts."""
    from models import populate_models

    models_dir = comfy_base_dir / "models"
    populate_models(models_dir)
    return models_dir


@contextmanager
def serve(base_dir: Path, models_dir: Path | None = None, extra_args: tuple[str, ...] = ()) -> Iterator[ComfyServer]:
    """A ComfyUI server on a free port over `base_dir` (see `prepare_base_dir`), ready to serve (/system_stats
    answers) with the pack imported; stopped on exit. Raises RuntimeError if it does not come up."""
    import requests
    from client import ComfyClient

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = base_dir / "server.log"
    command = [
        str(PYTHON), str(COMFY_DIR / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
        "--disable-auto-launch", "--disable-api-nodes", "--base-directory", str(base_dir),
        "--database-url", "sqlite:///:memory:", "--preview-method", "auto", *extra_args,
    ]
    start = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=base_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with rc={process.returncode} while starting:\n{log_tail(log_path)}")
            if time.monotonic() - start > STARTUP_TIMEOUT_S:
                raise RuntimeError(f"ComfyUI did not answer /system_stats within {STARTUP_TIMEOUT_S} s:\n"
                                   f"{log_tail(log_path)}")
            try:
                if requests.get(url + "/system_stats", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        server = ComfyServer(url, base_dir, log_path, models_dir or base_dir / "models", ComfyClient(url),
                             time.monotonic() - start)
        failed = [line for line in server.log().splitlines() if "IMPORT FAILED" in line and PACK in line]
        if failed:
            raise RuntimeError("ComfyUI could not import the pack:\n" + "\n".join(failed) + "\n" + log_tail(log_path))
        yield server
    finally:
        stop_group(process)


@pytest.fixture(scope="session")
def comfy_server(comfy_install, comfy_base_dir, comfy_models) -> Iterator[ComfyServer]:
    """A ComfyUI server for the session."""
    try:
        with serve(comfy_base_dir, comfy_models) as server:
            yield server
    except RuntimeError as err:
        pytest.fail(str(err))
