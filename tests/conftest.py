import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# tests/comfy holds plain modules (client, models, comfy_fixtures, ...), not a package: a package named `comfy` would
# shadow ComfyUI's own.
for path in (ROOT, ROOT / "tests" / "comfy"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from comfy_fixtures import comfy_base_dir, comfy_install, comfy_models, comfy_server  # noqa: E402,F401


def pytest_configure(config):
    config.addinivalue_line("markers", "comfy: needs the real ComfyUI of scripts/setup_comfy.sh")
    config.addinivalue_line("markers", "browser: drives the real ComfyUI in Chromium (scripts/setup_browser.sh)")
