"""The embedded demo models: tiny Wan2.1-shaped DiTs (MMPL and an autoregressive baseline) and a tiny Wan VAE,
trained on CPU on the synthetic world and shipped with the package, so `mmpl generate` works with no download."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

DEMO_DIR = Path(__file__).resolve().parent / "assets" / "demo"
MODES = ("mmpl", "ar")


@dataclass(frozen=True)
class DemoBundle:
    """Paths and settings of the demo models (from ``demo.json`` next to the weights)."""

    directory: Path
    dit: Path
    vae: Path
    codec: Path  # the latent space the DiT was trained in (PCA); the distilled `vae` approximates it for ComfyUI
    layout: str
    text_len: int
    size: int
    steps: int
    shift: float
    guidance: float
    text_context: int = 0  # the hashed encoder's context (0: words, 1: words and bigrams)
    vocabulary: tuple[str, ...] = ()  # the words of the prompts it was trained on

    @classmethod
    def load(cls, mode: str = "mmpl", directory: Path = DEMO_DIR) -> "DemoBundle":
        if mode not in MODES:
            raise ValueError(f"demo mode must be one of {MODES}, got {mode!r}")
        card = directory / "demo.json"
        if not card.exists():
            raise FileNotFoundError(
                f"the demo model is not in {directory} (demo.json missing); pass --model PATH or a model size"
            )
        spec = json.loads(card.read_text())
        if mode not in spec:
            raise FileNotFoundError(f"the demo bundle in {directory} has no {mode!r} model yet")
        entry = spec[mode]
        return cls(
            directory=directory, dit=directory / entry["dit"], vae=directory / spec["vae"],
            codec=directory / spec["codec"], layout=entry["layout"],
            text_len=int(spec["text_len"]), size=int(spec["size"]), steps=int(spec["steps"]),
            shift=float(spec["shift"]), guidance=float(spec["guidance"]),
            text_context=int(spec.get("text_context", 0)), vocabulary=tuple(spec.get("vocabulary", ())),
        )


    def text_encoder(self):
        """The hashed text encoder the DiT was trained with: its text_len, and the DiT's text width."""
        from safetensors import safe_open

        from .text import HashedTextEncoder

        with safe_open(str(self.dit), "pt") as weights:
            dim = weights.get_slice("text_embedding.0.weight").get_shape()[1]
        return HashedTextEncoder(dim=dim, text_len=self.text_len, context=self.text_context, vocabulary=self.vocabulary)


def unknown_words_message(encoder, prompts) -> str | None:
    """A warning naming the words (and word pairs) of `prompts` a demo model was never trained on, with the words it
    knows; None when it knows them all, or has no vocabulary (any other model's encoder)."""
    unknown: list[str] = []
    for prompt in prompts:
        unknown += [w for w in getattr(encoder, "unknown_words", lambda p: [])(prompt) if w not in unknown]
    if not unknown:
        return None
    words = " ".join(sorted(w for w in encoder.vocabulary if " " not in w))
    return (f"the demo model was trained on the synthetic world's prompts and never saw {', '.join(map(repr, unknown))}"
            f"; it knows the words: {words} — e.g. \"two objects: a red circle and a yellow square bounce over a navy "
            "to black gradient, the camera pans left\"")


def available(directory: Path = DEMO_DIR) -> bool:
    return (directory / "demo.json").exists()


def load_demo_pipeline(mode: str = "mmpl", device: str = "cpu", dtype: torch.dtype = torch.float32):
    """An `MMPLPipeline` over the demo DiT of `mode`, its exact latent codec and the hashed demo text encoder.

    The standalone pipeline decodes with the PCA latent space the DiT was trained in (exact and fast); the distilled
    Wan VAE in the bundle exists so that ComfyUI's stock VAE loader can decode the same latents.
    """
    from .checkpoints import load_wan_model
    from .data.pca_latents import PCALatentSpace
    from .layout import get_layout
    from .pipeline import MMPLPipeline

    bundle = DemoBundle.load(mode)
    dit = load_wan_model(bundle.dit, dtype=dtype, device=device).eval()
    vae = PCALatentSpace.load(bundle.codec).to(device)
    return MMPLPipeline(dit, vae, get_layout(bundle.layout), bundle.text_encoder(), negative_prompt="", device=device, dtype=dtype), bundle
