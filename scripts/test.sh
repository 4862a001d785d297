#!/usr/bin/env bash
# The whole test suite. Sets up .venv/ and, for tests/comfy/, a real ComfyUI in .comfy/ first (MMPL_SKIP_COMFY=1
# skips that set-up and those tests). Extra arguments go to pytest (e.g. -k parity).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${MMPL_SKIP_COMFY:-0}" == 1 ]]; then
  bash "$ROOT/scripts/setup_env.sh"
else
  bash "$ROOT/scripts/setup_comfy.sh"  # runs scripts/setup_env.sh first
fi
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
