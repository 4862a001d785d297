#!/usr/bin/env bash
# Reproduce the embedded demo models from scratch on a CPU (see mmpl_core/assets/demo/MODEL_CARD.md for the figures).
#   1. fit the PCA latent space's windowed decoder and distil a tiny Wan VAE into the latent space (for ComfyUI's
#      stock Load VAE);
#   2. train the MMPL DiT (teacher forcing with the mmpl-t2v-13 mask) and the AR baseline (ar-13 mask), with the same
#      data, seed, budget and recipe: 8192 synthetic clips, 8000 steps of batch 4, AdamW 5e-4 with cosine decay,
#      bf16 autocast, one torch thread each (the two runs share a 2-core CPU);
#   3. export EMA weights (fp16, Wan/ComfyUI key names) next to demo.json.
# Budgets: STEPS (default 8000) for both DiTs; each run resumes from its folder under OUT.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
PY=.venv/bin/python
STEPS=${STEPS:-8000}
OUT=${OUT:-build/demo}
ASSETS=mmpl_core/assets/demo
mkdir -p "$OUT" "$ASSETS"
$PY -m mmpl_core.data.pca_latents "$ASSETS/pca_latents.safetensors"
$PY -m mmpl_core.data.distill_vae --pca "$ASSETS/pca_latents.safetensors" --minutes 10 --original-keys --out "$ASSETS/vae.safetensors"
for mode in mmpl ar; do
  layout=mmpl-t2v-13; [[ $mode == ar ]] && layout=ar-13
  $PY -m mmpl_core train --out "$OUT/train-$mode" --layout "$layout" --latent-space "$ASSETS/pca_latents.safetensors" \
    --clips 8192 --steps "$STEPS" --batch 4 --lr 5e-4 --lr-schedule cosine --autocast bfloat16 --threads 1 \
    --seed 0 &
done
wait
$PY -c "from mmpl_core.train.export import export_demo; export_demo('$OUT', '$ASSETS')"
