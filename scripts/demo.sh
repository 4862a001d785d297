#!/usr/bin/env bash
# The main job. Sets up .venv/ first, then runs `mmpl` with the given arguments (default: the long-video demo).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
if [[ $# -eq 0 ]]; then
  rm -rf out/demo.plan  # a fresh plan each time (keep --plan-dir yourself to resume or edit)
  set -- generate --prompt "two objects: a red circle and a yellow square bounce over a navy to black gradient" \
    --segments 12 --out out/demo.mp4
fi
exec "$ROOT/.venv/bin/mmpl" "$@"
