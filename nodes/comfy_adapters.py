"""Adapters from ComfyUI's objects to what `mmpl_core` expects. The only module of the pack that reaches into
ComfyUI's internals (ModelPatcher, VAE, latent formats, progress, interruption)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.utils

from mmpl_core.pipeline import MMPLPipeline
from mmpl_core.prompt_bank import PromptBank

from .types import MMPLModelInfo

WAN21_LATENT = comfy.latent_formats.Wan21()
# Wan2.1's own parameter names end in these; anything else on a loaded model (scale_weight, weight_scale,
# comfy_quant, ...) is quantisation state that a checkpoint neither has nor replaces.
WAN_PARAMETER_LEAVES = ("weight", "bias", "modulation")


def wan_parameters(net: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The real Wan2.1 parameters of ComfyUI's `WanModel` by name, without quantisation metadata."""
    return {k: p for k, p in net.named_parameters() if k.rsplit(".", 1)[-1] in WAN_PARAMETER_LEAVES}


def unpatchable_parameters(net: torch.nn.Module) -> set[str]:
    """Parameters that sit on a module that also has children with parameters (each block's and the head's
    `modulation`). ModelPatcher's weight patching only visits modules whose parameters are all their own, so a
    weight patch on these is silently never applied (0.3.75 and newer)."""
    names = set()
    for prefix, module in net.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if own and any(any(True for _ in child.parameters()) for child in module.children()):
            names.update(f"{prefix}.{n}" if prefix else n for n in own)
    return names


def is_dynamic(patcher) -> bool:
    """Newer ComfyUI's dynamic-VRAM patcher streams weights inside each op from caches that object patches do not
    invalidate; 0.3.75's and newer classic patchers apply object patches on every load."""
    check = getattr(patcher, "is_dynamic", None)
    return bool(check()) if callable(check) else False


def patch_mechanism(patcher) -> str:
    """How `patch_in_weights` replaces weights on this patcher: "set" weight patches on dynamic-VRAM patchers,
    object patches otherwise."""
    return "set" if is_dynamic(patcher) else "object"


FP8_SCALE_RANGE = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}  # largest finite values


@dataclass(frozen=True)
class ScaledWeight:
    """A Linear weight in ComfyUI's scaled-fp8 form: `data` (fp8) · `scale` (float32 scalar)."""

    data: torch.Tensor
    scale: torch.Tensor


def checkpoint_cast(patcher, mechanism: str):
    """`cast(key, tensor)` for `load_matching_state_dict`: each checkpoint tensor in the form the model stores that
    parameter, so that the patched model holds what a model loaded from the merged weights would hold:
    - plain parameters: the parameter's dtype (bf16, fp8 …), rounded to nearest like the stock loader;
    - scaled-fp8 Linear weights (`scale_weight`), under object patches: a `ScaledWeight` with the tensor's own scale
      (amax / fp8 max, as the scaled files have it), rounded to nearest;
    - other quantised layers under object patches: quantised by the layer's own `set_weight`;
    - quantised layers under "set" patches: the compute dtype, which ComfyUI quantises when it applies the patch."""
    net = patcher.model.diffusion_model
    compute = getattr(patcher.model, "manual_cast_dtype", None) or torch.bfloat16

    def cast(key: str, tensor: torch.Tensor):
        module_name, _, leaf = key.rpartition(".")
        module = net.get_submodule(module_name) if module_name else net
        stored = getattr(module, leaf)
        if not hasattr(module, f"convert_{leaf}"):
            return tensor.to(stored.dtype)
        if mechanism == "set":
            return tensor.to(compute)
        if leaf == "weight" and getattr(module, "scale_weight", None) is not None and stored.dtype in FP8_SCALE_RANGE:
            scale = (tensor.abs().max().float() / FP8_SCALE_RANGE[stored.dtype]).clamp_min(1e-12)
            return ScaledWeight((tensor.float() / scale).to(stored.dtype), scale.reshape(()))
        seed = comfy.model_patcher.string_to_seed(f"diffusion_model.{key}")
        return getattr(module, f"set_{leaf}")(tensor.to(compute), return_weight=True, seed=seed)

    return cast


def _parameter(value: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(value, requires_grad=False)


def patch_in_weights(patcher, weights: dict[str, torch.Tensor], *, mechanism: str = "auto"):
    """A clone of `patcher` on which `weights` ({wan_key: tensor}, every Wan parameter) replace the model's own,
    with the patches already on `patcher` (LoRAs, other weight patches) applied on top of them, as on a model whose
    weights are the checkpoint. The original model and its other clones are left untouched.

    mechanism "object" (classic patchers): every parameter is replaced by an object patch, which ModelPatcher sets
    before it applies any weight patch, on full and partial loads; the weights are exactly the checkpoint's, also in
    fp8 (a "set" weight patch would pass fp8 values through ComfyUI's stochastic rounding again, moving some by an
    ulp). mechanism "set" (dynamic-VRAM patchers, whose weight caches ignore object patches): "set" weight patches,
    each put first on its key since ComfyUI applies a key's patches in the order they were added and a "set" discards
    what came before it; parameters weight patching never reaches (`unpatchable_parameters`) still get object patches.
    """
    if mechanism == "auto":
        mechanism = patch_mechanism(patcher)
    if mechanism not in ("object", "set"):
        raise ValueError(f"mechanism must be 'auto', 'object' or 'set', got {mechanism!r}")
    objects = set(weights) if mechanism == "object" else unpatchable_parameters(patcher.model.diffusion_model)
    patched = patcher.clone()
    sets = {}
    for key, value in weights.items():
        if isinstance(value, ScaledWeight):
            module = key.rpartition(".")[0]
            patched.add_object_patch(f"diffusion_model.{module}.scale_weight", _parameter(value.scale))
            value = value.data
        if key in objects:
            patched.add_object_patch(f"diffusion_model.{key}", _parameter(value))
        else:
            sets[f"diffusion_model.{key}"] = ("set", (value,))
    # add_patches also gives the clone a new patches_uuid, also when `sets` is empty: ComfyUI decides from it
    # whether a loaded clone of the same model already holds the right weights, and object patches do not change it
    patched.add_patches(sets)
    for key in sets:
        entries = patched.patches[key]  # the clone's own list
        entries.insert(0, entries.pop())
    return patched


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
