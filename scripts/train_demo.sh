#!/usr/bin/env bash
# Reproduce the embedded demo models from scratch on a CPU (see mmpl_core/assets/demo/MODEL_CARD.md for the figures).
#   1. fit the PCA latent space and distil a tiny Wan VAE into it;
#   2. train the MMPL DiT (teacher forcing with the mmpl-t2v-13 mask) and the AR baseline (ar-13 mask),
#      same data, seed and budget;
#   3. export EMA weights (fp16, Wan/ComfyUI key names) next to demo.json.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
PY=.venv/bin/python
STEPS=${STEPS:-5000}  # both DiTs get the same number of steps
OUT=${OUT:-build/demo}
ASSETS=mmpl_core/assets/demo
mkdir -p "$OUT" "$ASSETS"
$PY -m mmpl_core.data.distill_vae --pca "$ASSETS/pca_latents.safetensors" --minutes 10 --original-keys --out "$ASSETS/vae.safetensors"
for mode in mmpl ar; do
  layout=mmpl-t2v-13; [[ $mode == ar ]] && layout=ar-13
  $PY -m mmpl_core train --out "$OUT/train-$mode" --layout "$layout" --latent-space "$ASSETS/pca_latents.safetensors" \
    --clips 2048 --steps "$STEPS" --batch 4 --lr 5e-4 --threads 2 --seed 0
  $PY -c "from mmpl_core.train.export import export_dit; export_dit('$OUT/train-$mode', '$ASSETS/dit_$mode.safetensors')"
done
