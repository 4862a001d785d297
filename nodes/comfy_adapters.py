"""Adapters from ComfyUI's objects to what `mmpl_core` expects. The only module of the pack that reaches into
ComfyUI's internals (ModelPatcher, VAE, latent formats, progress, interruption)."""
from __future__ import annotations

import threading

import torch

import comfy.latent_formats
import comfy.model_management
import comfy.utils

from mmpl_core.pipeline import MMPLPipeline
from mmpl_core.prompt_bank import PromptBank

from .types import MMPLModelInfo

WAN21_LATENT = comfy.latent_formats.Wan21()


class ComfyWanVAE:
    """ComfyUI's `VAE` with the interface of `mmpl_core.vae.WanVAE`: videos [B, 3, T, H, W] in [-1, 1] ↔ model
    (normalised) latents [B, 16, F, h, w]. ComfyUI keeps LATENTs un-normalised; Wan21's format maps between them."""

    z_dim = 16

    def __init__(self, vae, input_name: str = "vae"):
        stride = getattr(vae, "downscale_index_formula", None)
        if getattr(vae, "latent_channels", None) != 16 or getattr(vae, "latent_dim", None) != 3 or stride != (4, 8, 8):
            raise ValueError(
                f"{input_name}: expected a Wan2.1 VAE (16 latent channels, 4×8×8 video compression), got "
                f"{getattr(vae, 'latent_channels', '?')} channels, compression {stride}"
            )
        self.vae = vae

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # ComfyUI's VAE moves inputs to its own device

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        pixels = ((video.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)  # [B, T, H, W, 3] in [0, 1]
        raw = torch.cat([self.vae.encode(p) for p in pixels])  # ComfyUI encodes one video [T, H, W, 3] at a time
        return WAN21_LATENT.process_in(raw.float()).cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        pixels = self.vae.decode(WAN21_LATENT.process_out(latents.float().cpu()))  # [B, T, H, W, 3] in [0, 1]
        return (pixels.float().permute(0, 4, 1, 2, 3) * 2 - 1).clamp(-1, 1).cpu()


def to_latent_dict(latents: torch.Tensor) -> dict:
    """Model latents [B, 16, F, h, w] → ComfyUI LATENT (un-normalised, like every Wan LATENT in ComfyUI)."""
    return {"samples": WAN21_LATENT.process_out(latents.float())}


def image_to_video_tensor(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, 3] in [0, 1] → [B, 3, H, W] in [-1, 1]."""
    return image.float().permute(0, 3, 1, 2) * 2 - 1


def video_to_image(frames: torch.Tensor) -> torch.Tensor:
    """[3, T, H, W] or [K, 3, H, W] in [-1, 1] → ComfyUI IMAGE [N, H, W, 3] in [0, 1]."""
    if frames.shape[0] == 3 and frames.ndim == 4:
        frames = frames.permute(1, 0, 2, 3)
    return ((frames.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous()


def conditioning_embedding(conditioning, input_name: str) -> torch.Tensor:
    """The text embedding [1, L, D] of a CONDITIONING with one entry."""
    if not isinstance(conditioning, list) or not conditioning or not isinstance(conditioning[0][0], torch.Tensor):
        raise ValueError(f"{input_name}: expected a CONDITIONING from a text encoder node")
    if len(conditioning) > 1:
        raise ValueError(f"{input_name}: MMPL takes one prompt per conditioning, got {len(conditioning)} combined entries")
    embedding = conditioning[0][0]
    if embedding.ndim != 3 or embedding.shape[0] != 1:
        raise ValueError(f"{input_name}: expected a text embedding [1, tokens, dim], got {tuple(embedding.shape)}")
    return embedding


def load_pipeline(model: MMPLModelInfo, vae: ComfyWanVAE | None, bank: PromptBank, negative: str) -> MMPLPipeline:
    """Load the patched model onto its device through ComfyUI's memory management and build the core pipeline over
    its own `WanModel` (no copy of the weights)."""
    if bank.fallback is None and model.text_encoder is not None:
        bank = bank.merged(PromptBank(fallback=model.text_encoder))  # plain-text prompts (e.g. plans from the CLI)
    comfy.model_management.load_models_gpu([model.patcher])
    base = model.patcher.model
    dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        dtype = torch.bfloat16
    return MMPLPipeline(
        base.diffusion_model, vae, model.layout, bank, negative_prompt=negative,
        device=model.patcher.load_device, dtype=dtype,
    )


class NodeProgress:
    """A ProgressBar over every denoising step of a node, checking ComfyUI's interrupt flag at each step."""

    def __init__(self, total: int, node_id: str | None = None):
        self.bar = comfy.utils.ProgressBar(max(total, 1), node_id=node_id)
        self._lock = threading.Lock()  # parallel populate workers step from several threads

    def step(self) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        with self._lock:
            self.bar.update(1)


def check_interrupt() -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()


INTERRUPT = comfy.model_management.InterruptProcessingException


def node_id(node_cls) -> str | None:
    """The running node's id (for its progress bar); None when the node is called outside an execution."""
    hidden = getattr(node_cls, "hidden", None)
    return getattr(hidden, "unique_id", None)
