#!/usr/bin/env bash
# Set up what the browser tests (tests/browser/) drive: Debian's Chromium (apt-get install chromium when
# /usr/bin/chromium is missing; Playwright's own browser download is never used), the npm package playwright-core
# in .browser/node_modules, and a newer ComfyUI frontend than the one ComfyUI 0.3.75 brings: PyPI's
# comfyui-frontend-package, pinned, its static files in .browser/frontend/static (served with --front-end-root).
# Everything goes to .browser/ (git-ignored). Re-running is cheap: nothing is done again unless this script changed
# or something is missing. MMPL_CHROMIUM may name another Chromium binary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.browser"
STAMP="$DIR/.mmpl-browser-stamp"
CHROMIUM="${MMPL_CHROMIUM:-/usr/bin/chromium}"
PLAYWRIGHT_VERSION="1.65.1"  # needs Node >= 20
FRONTEND_VERSION="1.58.1"    # the newest comfyui-frontend-package on PyPI (December 2026)
FRONTEND="$DIR/frontend"
PY="$ROOT/.venv/bin/python"  # made by scripts/setup_env.sh

log() { echo "[setup-browser] $*" >&2; }

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else log "need root (or password-less sudo) to run: $*"; exit 1
  fi
}

if [[ ! -x "$CHROMIUM" ]]; then
  log "installing Debian's chromium (apt-get)"
  as_root apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2
  [[ -x "$CHROMIUM" ]] || { log "apt-get installed chromium, but $CHROMIUM does not exist"; exit 1; }
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing nodejs and npm (apt-get)"
  as_root apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >&2
fi
if (( $(node -p 'process.versions.node.split(".")[0]') < 20 )); then
  log "playwright-core $PLAYWRIGHT_VERSION needs Node >= 20, found $(node --version)"
  exit 1
fi

if [[ -f "$DIR/node_modules/playwright-core/package.json" && -f "$FRONTEND/static/index.html" \
      && "$(cat "$STAMP" 2>/dev/null)" == "$(sha256sum < "${BASH_SOURCE[0]}")" ]]; then
  exit 0
fi
log "installing playwright-core@$PLAYWRIGHT_VERSION into $DIR"
mkdir -p "$DIR"
[[ -f "$DIR/package.json" ]] || echo '{"name": "mmpl-browser-tests", "private": true}' > "$DIR/package.json"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error \
  "playwright-core@$PLAYWRIGHT_VERSION" >&2

log "unpacking comfyui-frontend-package==$FRONTEND_VERSION (PyPI) into $FRONTEND"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download --quiet --no-deps --dest "$WORK" "comfyui-frontend-package==$FRONTEND_VERSION" >&2
rm -rf "$FRONTEND"
"$PY" "$ROOT/scripts/unpack_wheel.py" "$(ls "$WORK"/*.whl)" comfyui_frontend_package/static/ "$FRONTEND/static"
echo "$FRONTEND_VERSION" > "$FRONTEND/version"
sha256sum < "${BASH_SOURCE[0]}" > "$STAMP"
