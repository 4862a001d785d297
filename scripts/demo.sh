#!/usr/bin/env bash
# The main job. Sets up .venv/ first, then runs `mmpl` with the given arguments (default: the demo below).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
if [[ $# -eq 0 ]]; then
  set -- segment --model tiny --out out/segment.mp4
fi
exec "$ROOT/.venv/bin/mmpl" "$@"
