"""A Wan2.1 text-to-video model folder, in either of its two published layouts, as the pieces MMPL needs.

diffusers layout (``Wan-AI/Wan2.1-T2V-14B-Diffusers``)::

    model_index.json
    transformer/   config.json + diffusion_pytorch_model*.safetensors (+ .index.json when sharded)
    vae/           config.json + diffusion_pytorch_model.safetensors
    text_encoder/  config.json + model*.safetensors          (transformers UMT5EncoderModel)
    tokenizer/     tokenizer.json / spiece.model + tokenizer_config.json

original layout (``Wan-AI/Wan2.1-T2V-14B``)::

    config.json                                       (dim, num_heads, ...; optional)
    diffusion_pytorch_model*.safetensors (+ diffusion_pytorch_model.safetensors.index.json when sharded)
    Wan2.1_VAE.pth
    models_t5_umt5-xxl-enc-bf16.pth
    google/umt5-xxl/                                  (the tokenizer; ``tokenizer/`` or ``umt5-xxl/`` also work)

With an MMPL checkpoint (``--checkpoint t2v_14B_8k.pt``) the folder's DiT weights are not read (the checkpoint
replaces them), so the DiT files may be absent.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import Checkpoint, CheckpointError, load_wan_model
from .model.config import WanConfig

ORIGINAL_VAE = "Wan2.1_VAE.pth"
ORIGINAL_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
ORIGINAL_TOKENIZER_DIRS = ("google/umt5-xxl", "umt5-xxl", "tokenizer")
ORIGINAL_DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DIFFUSERS_PARTS = ("transformer", "vae", "text_encoder", "tokenizer")
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


class WanFolderError(ValueError):
    """A --wan folder that is neither layout, or lacks files; the message lists what is missing."""


@dataclass(frozen=True)
class WanFolder:
    """Where each part of a Wan2.1 model lies. dit: a folder of shards, an index json or one file (None when the
    folder has no DiT weights); dit_config: the DiT's config.json as a dict (None when absent)."""

    root: Path
    layout: str  # "diffusers" | "original"
    dit: Path | None
    dit_config: dict | None
    vae: Path
    text_encoder: Path
    tokenizer: Path

    @property
    def num_heads(self) -> int | None:
        cfg = self.dit_config or {}
        return cfg.get("num_heads") or cfg.get("num_attention_heads")

    @property
    def dim(self) -> int | None:
        cfg = self.dit_config or {}
        if "dim" in cfg:
            return cfg["dim"]
        if "num_attention_heads" in cfg and "attention_head_dim" in cfg:
            return cfg["num_attention_heads"] * cfg["attention_head_dim"]
        return None

    def wan_config(self) -> WanConfig | None:
        """The DiT's `WanConfig` from its config.json (either naming), without reading weights; None if absent."""
        cfg = self.dit_config
        if not cfg or self.dim is None or self.num_heads is None:
            return None
        get = lambda *names, default=None: next((cfg[n] for n in names if n in cfg), default)  # noqa: E731
        return WanConfig(
            dim=self.dim, ffn_dim=get("ffn_dim"), num_heads=self.num_heads, num_layers=get("num_layers"),
            in_dim=get("in_dim", "in_channels", default=16), out_dim=get("out_dim", "out_channels", default=16),
            text_dim=get("text_dim", default=4096), freq_dim=get("freq_dim", default=256),
            patch_size=tuple(get("patch_size", default=(1, 2, 2))), text_len=get("text_len", default=512),
            eps=get("eps", default=1e-6), qk_norm=bool(get("qk_norm", default=True)),
            cross_attn_norm=bool(get("cross_attn_norm", default=True)),
        )

    def describe(self) -> str:
        return (f"{self.root} ({self.layout} layout): DiT {self.dit or '(none: from --checkpoint)'}, VAE {self.vae}, "
                f"text encoder {self.text_encoder}, tokenizer {self.tokenizer}")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError) as err:
        raise WanFolderError(f"cannot read {path} as JSON: {err}") from err


def _has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in _TOKENIZER_FILES)


def _diffusers(root: Path, need_dit: bool) -> tuple[WanFolder | None, list[str]]:
    missing = []
    transformer = root / "transformer"
    has_dit = transformer.is_dir() and any(transformer.glob("*.safetensors"))
    if need_dit and not has_dit:
        missing.append("transformer/*.safetensors")
    for part, test in (("vae/config.json", (root / "vae" / "config.json").is_file()),
                       ("text_encoder/config.json", (root / "text_encoder" / "config.json").is_file()),
                       ("tokenizer/ (tokenizer.json or spiece.model)", _has_tokenizer(root / "tokenizer"))):
        if not test:
            missing.append(part)
    if missing:
        return None, missing
    return WanFolder(root, "diffusers", transformer if has_dit else None, _read_json(transformer / "config.json"),
                     root / "vae", root / "text_encoder", root / "tokenizer"), []


def _original(root: Path, need_dit: bool) -> tuple[WanFolder | None, list[str]]:
    missing = []
    index = root / ORIGINAL_DIT_INDEX
    shards = sorted(root.glob("diffusion_pytorch_model*.safetensors"))
    dit = index if index.is_file() else (shards[0] if len(shards) == 1 else (root if shards else None))
    if need_dit and dit is None:
        missing.append("diffusion_pytorch_model*.safetensors")
    for name in (ORIGINAL_VAE, ORIGINAL_T5):
        if not (root / name).is_file():
            missing.append(name)
    tokenizer = next((root / d for d in ORIGINAL_TOKENIZER_DIRS if _has_tokenizer(root / d)), None)
    if tokenizer is None:
        missing.append("google/umt5-xxl/ (the tokenizer: tokenizer.json or spiece.model)")
    if missing:
        return None, missing
    return WanFolder(root, "original", dit, _read_json(root / "config.json"), root / ORIGINAL_VAE,
                     root / ORIGINAL_T5, tokenizer), []


def find_wan_folder(path: str | Path, *, need_dit: bool = True) -> WanFolder:
    """Detect the layout of a Wan2.1 T2V folder; `WanFolderError` says what each layout misses.

    need_dit: False when an MMPL checkpoint replaces the DiT (its shards may then be absent).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise WanFolderError(f"--wan {path}: not a folder (expected a Wan2.1-T2V model folder, diffusers or original "
                             "layout)")
    if (root / "model_index.json").is_file():
        folder, missing = _diffusers(root, need_dit)
        if folder is None:
            raise WanFolderError(f"--wan {root}: a diffusers folder (model_index.json found) missing: "
                                 f"{', '.join(missing)}")
        return folder
    folder, missing = _original(root, need_dit)
    if folder is None:
        raise WanFolderError(f"--wan {root}: neither a diffusers folder (model_index.json missing) nor an original "
                             f"Wan2.1 folder (missing: {', '.join(missing)})")
    return folder


def count_params(path: Path) -> int:
    """Parameters stored in a weights file or a folder of safetensors, read from headers / a memory map only."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
    else:
        files = [path]
    total = 0
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt", device="cpu") as handle:
                total += sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys())
        else:
            sd = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            total += sum(v.numel() for v in sd.values() if isinstance(v, torch.Tensor))
    return total


def vae_base_dim(folder: WanFolder) -> int | None:
    """The VAE's base width (96 for Wan2.1): vae/config.json, or the first conv of a single-file (original) VAE."""
    if folder.vae.is_dir():
        return (_read_json(folder.vae / "config.json") or {}).get("base_dim")
    sd = torch.load(folder.vae, map_location="cpu", weights_only=True, mmap=True)
    conv = sd.get("encoder.conv1.weight") if isinstance(sd, dict) else None
    return None if conv is None else int(conv.shape[0])


def load_folder_dit(folder: WanFolder, checkpoint: Checkpoint | None = None, *, ema: bool = False,
                    dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu"):
    """The DiT: the MMPL `checkpoint`'s weights (``generator``, or ``generator_ema`` with ema) when given, else the
    folder's own. Streamed to `device` in `dtype`; the head count comes from the folder's config.json."""
    source = checkpoint if checkpoint is not None else folder.dit
    if source is None:
        raise WanFolderError(f"--wan {folder.root}: no DiT weights in the folder and no --checkpoint given")
    model = load_wan_model(source, ema=ema, num_heads=folder.num_heads, dtype=dtype, device=device)
    if checkpoint is not None and folder.dim is not None and model.config.dim != folder.dim:
        raise CheckpointError(f"--checkpoint {checkpoint}: a DiT of width {model.config.dim}, but the --wan folder "
                              f"{folder.root} holds a model of width {folder.dim} (e.g. a 14B checkpoint needs "
                              "Wan2.1-T2V-14B)")
    return model


def load_folder_vae(folder: WanFolder, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
    from .vae import load_wan_vae

    return load_wan_vae(str(folder.vae), dtype=dtype, device=device)


def load_folder_text_encoder(folder: WanFolder, *, dtype: torch.dtype = torch.float32,
                             device: torch.device | str = "cpu", offload: bool = False):
    from .umt5 import load_umt5_encoder

    return load_umt5_encoder(folder.text_encoder, folder.tokenizer, dtype=dtype, device=device, offload=offload)


__all__ = ["ORIGINAL_T5", "ORIGINAL_VAE", "WanFolder", "WanFolderError", "count_params", "find_wan_folder", "load_folder_dit",
           "load_folder_text_encoder", "load_folder_vae", "vae_base_dim"]
