"""Packaging for the Comfy Registry: `comfy node validate` (comfy-cli, offline) passes without security warnings, and
pyproject.toml carries what the registry and ComfyUI 0.3.75's config parser read."""
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMFY_CLI = REPO / ".venv" / "bin" / "comfy"

pytestmark = pytest.mark.comfy


def test_comfy_node_validate_passes(comfy_install, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "COMFY_NO_UPDATE_CHECK": "1", "COMFY_NO_TELEMETRY": "1",
           "COMFY_CLI_NO_REMOTE_REFRESH": "1", "COMFY_KNOWLEDGE_DISABLE": "1",
           "PATH": f"{COMFY_CLI.parent}:{os.environ['PATH']}"}
    run = subprocess.run([str(COMFY_CLI), "--skip-prompt", "node", "validate"], cwd=REPO, env=env,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Security warnings found" not in output, output


def test_pyproject_has_the_registry_fields():
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = doc["project"], doc["tool"]["comfy"]
    assert "comfyui" not in project["name"].lower() and project["version"].count(".") == 2
    assert project["urls"]["Repository"] and project["license"] and project["description"]
    assert comfy["PublisherId"] and comfy["DisplayName"] == "MMPL Long Video"
    assert comfy["requires-comfyui"].startswith(">=0.3.75")
