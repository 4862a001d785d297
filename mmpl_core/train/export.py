"""Export trained demo models: EMA weights in Wan2.1 / ComfyUI key names, fp16 safetensors, plus demo.json."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoints import save_wan_safetensors


def export_dit(train_dir: str | Path, out_file: str | Path, *, ema: bool = True) -> Path:
    """The (EMA) weights of a training folder → fp16 safetensors with the original Wan2.1 names, which ComfyUI's
    "Load Diffusion Model" detects as a Wan2.1 T2V model (the shapes follow its head_dim-128 rule)."""
    weights = load_file(Path(train_dir) / ("ema.safetensors" if ema else "model.safetensors"))
    return save_wan_safetensors(weights, out_file, dtype=torch.float16)


def loss_summary(train_dir: str | Path, tail: int = 10) -> dict:
    """Steps, minutes and the mean of the last `tail` logged losses of a training folder."""
    records = [json.loads(line) for line in (Path(train_dir) / "loss.jsonl").read_text().splitlines() if line]
    last = records[-tail:]
    return {
        "steps": records[-1]["step"],
        "minutes": round(records[-1]["minutes"], 1),
        "first_loss": round(records[0]["loss"], 4),
        "final_loss": round(sum(r["loss"] for r in last) / len(last), 4),
    }


def export_demo(train_root: str | Path, assets: str | Path, modes=("mmpl", "ar")) -> dict:
    """Both demo DiTs of `train_root`/train-<mode> → `assets`/dit_<mode>.safetensors, and demo.json told how their
    prompts were encoded (the hashed encoder's bigram context) and which words and word pairs they saw."""
    from ..data.synthetic import prompt_vocabulary

    assets = Path(assets)
    summaries = {}
    for mode in modes:
        export_dit(Path(train_root) / f"train-{mode}", assets / f"dit_{mode}.safetensors")
        summaries[mode] = loss_summary(Path(train_root) / f"train-{mode}")
    card = assets / "demo.json"
    spec = json.loads(card.read_text())
    spec.update(text_context=1, vocabulary=list(prompt_vocabulary()))
    card.write_text(json.dumps(spec, indent=2) + "\n")
    return summaries
