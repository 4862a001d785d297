"""Adapters from ComfyUI's objects to what `mmpl_core` expects. The only module of the pack that reaches into
ComfyUI's internals (ModelPatcher, VAE, latent formats, progress, interruption)."""
from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass
from fractions import Fraction

import torch

import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.utils
import latent_preview
from comfy_api.latest import InputImpl, Types

from mmpl_core.checkpoints import infer_config
from mmpl_core.memory import GIB, device_bytes_beyond_weights
from mmpl_core.pipeline import MMPLPipeline
from mmpl_core.placement import usable_bytes
from mmpl_core.prompt_bank import PromptBank

from .types import MMPLModelInfo

WAN21_LATENT = comfy.latent_formats.Wan21()
log = logging.getLogger(__name__)
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
    if mechanism == "object":
        # LoRAs are then written into the object-patched parameters themselves: a later load of the same clone
        # re-applies object patches without re-patching weights, and would otherwise drop the LoRA.
        patched.weight_inplace_update = True
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


class CodecVAE:
    """A ComfyUI VAE (the interface of `comfy.sd.VAE` that VAE Decode / VAE Encode and the pack use) over a latent
    codec of the `mmpl_core` kind (`codec.encode`: video [B, 3, T, H, W] in [-1, 1] → model latents; `decode`
    back): the embedded demo's exact codec, so ComfyUI decodes the demo's latents as the `mmpl` command does.
    ComfyUI LATENTs are the model latents through Wan21's format, like a Wan VAE's."""

    latent_channels, latent_dim, output_channels = 16, 3, 3
    downscale_index_formula = upscale_index_formula = (4, 8, 8)

    def __init__(self, codec):
        self.codec = codec

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE frames [T, H, W, 3] (one video) or [B, T, H, W, 3] in [0, 1] → ComfyUI LATENT [B, 16, F, h, w]."""
        video = pixels[None] if pixels.ndim == 4 else pixels
        latents = self.codec.encode(video[..., :3].float().permute(0, 4, 1, 2, 3) * 2 - 1)
        return WAN21_LATENT.process_out(latents.cpu())

    @torch.no_grad()
    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """ComfyUI LATENT [B, 16, F, h, w] → frames [B, T, H, W, 3] in [0, 1]."""
        video = self.codec.decode(WAN21_LATENT.process_in(samples.float().cpu()))
        return ((video + 1) / 2).permute(0, 2, 3, 4, 1).contiguous()


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


def video_value(images: torch.Tensor, fps: int):
    """ComfyUI's VIDEO (what Create Video makes) from IMAGE frames [N, H, W, 3] at `fps`."""
    return InputImpl.VideoFromComponents(Types.VideoComponents(images=images, frame_rate=Fraction(fps)))


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


def sampling_memory(model: MMPLModelInfo, settings, role: str) -> tuple[str, int]:
    """(KV cache placement, bytes MMPL needs on the device beyond the weights) for a run of `role` ("plan",
    "populate" or "segment") with the plan's `settings`: the KV cache in that placement, the prompt's text K/V and
    the largest chunk's activations (`mmpl_core.memory.device_bytes_beyond_weights`). "auto" keeps the cache on
    the device when the weights and all of that fit its memory less the estimator's reserve (`usable_bytes`, as
    `mmpl --kv-cache auto` decides), else in CPU memory."""
    net = model.patcher.model.diffusion_model
    cfg = infer_config(wan_parameters(net))
    nbytes = torch.finfo(compute_dtype(model.patcher)).bits // 8
    args = dict(role=role, guidance=settings.sampler.guidance, kv_dtype=settings.kv_dtype,
                cfg_branches=settings.cfg_branches, nbytes=nbytes)
    placement = model.kv_cache
    if placement == "auto":
        device = model.patcher.load_device
        on_device = device_bytes_beyond_weights(cfg, model.layout, settings.height, settings.width, kv_cache="device",
                                                **args)
        total_gib = comfy.model_management.get_total_memory(device) / GIB
        fits = device.type != "cuda" or model.patcher.model_size() + on_device <= usable_bytes(total_gib)
        placement = "device" if fits else "cpu"
    extra = device_bytes_beyond_weights(cfg, model.layout, settings.height, settings.width, kv_cache=placement, **args)
    return placement, extra


def compute_dtype(patcher) -> torch.dtype:
    base = patcher.model
    dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    return dtype if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.bfloat16


def load_pipeline(model: MMPLModelInfo, vae: ComfyWanVAE | None, bank: PromptBank, negative: str, settings=None,
                  role: str = "segment") -> MMPLPipeline:
    """Load the patched model onto its device through ComfyUI's memory management and build the core pipeline over
    its own `WanModel` (no copy of the weights). With the plan's `settings`, model management is first told what
    the run needs beyond the weights (`sampling_memory`), so it offloads weights (a partial load) to make room."""
    if bank.fallback is None and model.text_encoder is not None:
        bank = bank.merged(PromptBank(fallback=model.text_encoder))  # plain-text prompts (e.g. plans from the CLI)
    placement, extra = ("device", 0) if settings is None else sampling_memory(model, settings, role)
    if settings is not None:
        log.info("MMPL %s at %dx%d: KV cache on %s; %d bytes reserved beyond the weights", role, settings.width,
                 settings.height, placement, extra)
    comfy.model_management.load_models_gpu([model.patcher], memory_required=extra, minimum_memory_required=extra)
    return MMPLPipeline(
        model.patcher.model.diffusion_model, vae, model.layout, bank, negative_prompt=negative,
        device=model.patcher.load_device, dtype=compute_dtype(model.patcher), kv_cache=placement,
    )


def device_replica(model: MMPLModelInfo, pipeline: MMPLPipeline, device: torch.device) -> torch.nn.Module:
    """The model's module tree on another device, for a worker there. Newer ComfyUI places a patcher on another
    device with `ModelPatcher.deepclone_multigpu` (a fresh model from the loader, the same patches; the only safe way
    once weights stream inside op calls), loaded through model management; the MMPL weights held by object patches
    get their own copies for it. 0.3.75, which lacks it, gets a deep copy of the loaded (already patched) tree."""
    patcher = model.patcher
    if hasattr(patcher, "deepclone_multigpu") and getattr(patcher, "cached_patcher_init", None) is not None:
        replica = patcher.deepclone_multigpu(new_load_device=device)
        replica.object_patches = {
            k: _parameter(v.detach().to(replica.offload_device, copy=True)) if isinstance(v, torch.nn.Parameter) else v
            for k, v in replica.object_patches.items()
        }
        comfy.model_management.load_models_gpu([replica])
        net = replica.model.diffusion_model
        net.mmpl_patcher = replica  # keeps it (and model management's hold on it) alive with the module
        return net
    return copy.deepcopy(pipeline.model).to(device)


class NodeProgress:
    """A ProgressBar over every denoising step of a node, checking ComfyUI's interrupt flag at each step, with a
    preview of the chunk being denoised (its clean estimate, the chunk's frames side by side, through ComfyUI's
    latent previewer for the model's latent format: Latent2RGB, or TAESD/TAEHV where installed), as KSampler
    sends them. Thread-safe: parallel workers step it from their threads."""

    def __init__(self, total: int, node_id: str | None = None, pipeline: MMPLPipeline | None = None,
                 latent_format=WAN21_LATENT):
        self.total, self.done = max(total, 1), 0
        self.bar = comfy.utils.ProgressBar(self.total, node_id=node_id)
        self._lock = threading.Lock()
        self._latest: torch.Tensor | None = None
        self._previewer = latent_preview.get_previewer(torch.device("cpu"), latent_format) if pipeline else None
        if self._previewer is not None:
            pipeline.on_denoised = self._keep

    def _keep(self, x0: torch.Tensor) -> None:
        self._latest = x0  # previewed (once) at the step's end; a later step replaces it

    def _preview(self):
        x0, self._latest = self._latest, None
        if x0 is None:
            return None
        frames = x0[0].detach().float().cpu()  # [C, F, h, w] → one image [1, C, h, F·w]
        return self._previewer.decode_latent_to_preview_image("JPEG", frames.permute(0, 2, 1, 3).flatten(2)[None])

    def step(self) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        with self._lock:
            self.done = min(self.done + 1, self.total)
            self.bar.update_absolute(self.done, self.total, self._preview() if self._previewer else None)

    def finish(self) -> None:
        """Show the node as done (also when it had nothing left to do, e.g. populated while planning)."""
        with self._lock:
            self.done = self.total
            self.bar.update_absolute(self.total, self.total)


def check_interrupt() -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()


INTERRUPT = comfy.model_management.InterruptProcessingException


def node_id(node_cls) -> str | None:
    """The running node's id (for its progress bar); None when the node is called outside an execution."""
    hidden = getattr(node_cls, "hidden", None)
    return getattr(hidden, "unique_id", None)
