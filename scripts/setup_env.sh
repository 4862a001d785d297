#!/usr/bin/env bash
# Create or reuse the project's virtual environment in .venv/ (torch pinned), then install the project into it.
# Re-running is cheap: nothing is installed again unless this script or pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)

stamp_of() { cat "$ROOT/scripts/setup_env.sh" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1; }

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating $VENV" >&2
  "$PYTHON_BIN" -m venv "$VENV"
fi
STAMP="$VENV/.mmpl-setup-stamp"
if [[ "$(cat "$STAMP" 2>/dev/null)" != "$(stamp_of)" ]]; then
  echo "[setup] installing dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet "${TORCH_PINS[@]}" >&2
  "$VENV/bin/python" -m pip install --quiet "${TORCH_PINS[@]}" -e "$ROOT[dev]" >&2
  stamp_of > "$STAMP"
fi
