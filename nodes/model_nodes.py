"""Loading: MMPL Model (a Wan2.1 MODEL plus MMPL weights, or the embedded demo), the demo's VAE and text encoder."""
from __future__ import annotations

import logging
import os

import comfy.sd
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from mmpl_core.checkpoints import CheckpointError, load_matching_state_dict
from mmpl_core.data.pca_latents import PCALatentSpace
from mmpl_core.demo import DemoBundle, unknown_words_message
from mmpl_core.layout import LAYOUTS, LayoutError, get_layout
from mmpl_core.plan import KV_DTYPES

from .comfy_adapters import CodecVAE, checkpoint_cast, patch_in_weights, patch_mechanism, wan_parameters
from .types import CATEGORY, MMPLModel, MMPLModelInfo

DEMO_CHOICES = {"demo: MMPL (embedded)": "mmpl", "demo: autoregressive baseline (embedded)": "ar"}
NO_CHECKPOINT = "none (use the model as it is)"
LAYOUT_CHOICES = ["auto", *LAYOUTS, "mmpl-t2v-13", "mmpl-i2v-13", "ar-13", "ar-21"]
CHECKPOINT_FOLDERS = ("mmpl", "diffusion_models")
KV_CACHE_CHOICES = ("auto", "device", "cpu")
DEMO_PROMPT = "two objects: a red circle and a yellow square bounce over a navy to black gradient"
log = logging.getLogger(__name__)


def register_mmpl_folder() -> None:
    """`models/mmpl` for MMPL checkpoints (t2v_14B_8k.pt …), beside ComfyUI's own model folders."""
    if "mmpl" not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path("mmpl", os.path.join(folder_paths.models_dir, "mmpl"))
        folder_paths.folder_names_and_paths["mmpl"] = (
            folder_paths.folder_names_and_paths["mmpl"][0], set(folder_paths.supported_pt_extensions)
        )


def checkpoint_choices() -> list[str]:
    register_mmpl_folder()
    files = [f"{folder}/{name}" for folder in CHECKPOINT_FOLDERS for name in folder_paths.get_filename_list(folder)]
    return [NO_CHECKPOINT, *DEMO_CHOICES, *files]


def check_wan_t2v(patcher, input_name: str = "model"):
    """The `WanModel` inside a ModelPatcher, or a ValueError naming the input and what it got instead."""
    base = getattr(patcher, "model", None)
    net = getattr(base, "diffusion_model", None)
    if type(net).__name__ != "WanModel" or type(base).__name__ != "WAN21":
        raise ValueError(
            f"{input_name}: expected a Wan2.1 text-to-video diffusion model (Load Diffusion Model), got "
            f"{type(base).__name__} / {type(net).__name__}"
        )
    if getattr(net, "model_type", "t2v") != "t2v" or getattr(net, "img_emb", None) is not None or net.patch_embedding.weight.shape[1] != 16:
        raise ValueError(
            f"{input_name}: this is a Wan2.1 image-to-video (CLIP-vision) model; MMPL runs on the Wan2.1 T2V "
            "architecture (its I2V mode conditions on the image latent instead): load Wan2.1-T2V"
        )
    return net


def load_demo_dit(mode: str):
    bundle = DemoBundle.load(mode)
    patcher = comfy.sd.load_diffusion_model(str(bundle.dit))
    return patcher, bundle


def patch_checkpoint(patcher, choice: str):
    """A clone of `patcher` running an MMPL checkpoint's weights, with the patches already on `patcher` (LoRAs)
    applied on top of them (see `patch_in_weights`)."""
    folder, _, name = choice.partition("/")
    path = folder_paths.get_full_path_or_raise(folder, name)
    net = check_wan_t2v(patcher)
    shapes = {k: tuple(p.shape) for k, p in wan_parameters(net).items()}
    mechanism = patch_mechanism(patcher)
    try:
        weights = load_matching_state_dict(path, shapes, cast=checkpoint_cast(patcher, mechanism))
    except (CheckpointError, OSError, RuntimeError) as err:
        raise ValueError(f"checkpoint: {name} does not fit the connected model: {err}") from err
    return patch_in_weights(patcher, weights, mechanism=mechanism)


class MMPLModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_Model",
            display_name="MMPL Model",
            category=CATEGORY,
            description="A Wan2.1 T2V model ready for MMPL planning and populating: the connected MODEL with an MMPL "
                        "checkpoint patched in (models/mmpl or models/diffusion_models), or the embedded demo model.",
            inputs=[
                io.Model.Input("model", optional=True, tooltip="A Wan2.1 T2V model from Load Diffusion Model "
                               "(LoRAs and fp8/bf16 weights are honoured). Not needed for the demo models."),
                io.Combo.Input("checkpoint", options=checkpoint_choices(), default=NO_CHECKPOINT,
                               tooltip="MMPL weights to patch into the model (e.g. t2v_14B_8k.pt over Wan2.1-T2V-14B), "
                                       "or an embedded demo model."),
                io.Combo.Input("layout", options=LAYOUT_CHOICES, default="auto",
                               tooltip="Segment layout (which latent frames are keyframes). auto: wan-t2v for Wan "
                                       "checkpoints, the demo's own layout for the demo."),
                io.Combo.Input("kv_cache", options=list(KV_CACHE_CHOICES), default="auto", optional=True,
                               tooltip="Where the KV cache of clean frames lives while sampling (same results either "
                                       "way). device: fastest. cpu: in CPU memory, each layer's part copied to the "
                                       "GPU just ahead of use (19 GB less per CFG branch for 14B at 480x832). auto: "
                                       "the device when it fits. ComfyUI is told what sampling needs beyond the "
                                       "weights and offloads weights to make room."),
                io.Combo.Input("kv_dtype", options=list(KV_DTYPES), default=KV_DTYPES[0], optional=True,
                               tooltip="Storage of the KV cache for new plans: compute (the model's dtype) or "
                                       "float8_e4m3fn (half of bf16, with a scale per frame and head; changes the "
                                       "results slightly, so plans record it)."),
            ],
            outputs=[MMPLModel.Output(display_name="mmpl_model")],
        )

    @classmethod
    def execute(cls, checkpoint, layout, model=None, kv_cache="auto", kv_dtype=KV_DTYPES[0]) -> io.NodeOutput:
        text_encoder = None
        if checkpoint in DEMO_CHOICES:
            if model is not None:
                raise ValueError("model: the demo checkpoints bring their own DiT; disconnect the model input")
            model, bundle = load_demo_dit(DEMO_CHOICES[checkpoint])
            default_layout, name = bundle.layout, checkpoint
            text_encoder = bundle.text_encoder()
        elif model is None:
            raise ValueError("model: connect a Wan2.1 T2V model (Load Diffusion Model), or choose a demo checkpoint")
        else:
            check_wan_t2v(model)
            default_layout, name = "wan-t2v", "model"
            if checkpoint != NO_CHECKPOINT:
                model, name = patch_checkpoint(model, checkpoint), checkpoint
        check_wan_t2v(model)
        try:
            chosen = get_layout(default_layout if layout == "auto" else layout)
        except LayoutError as err:
            raise ValueError(f"layout: {err}") from err
        return io.NodeOutput(MMPLModelInfo(model, chosen, name, text_encoder, kv_cache, kv_dtype))


class MMPLDemoVAE(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_DemoVAE",
            display_name="MMPL Demo VAE",
            category=CATEGORY,
            description="The embedded demo model's latent codec as a ComfyUI VAE: the exact one the `mmpl` command "
                        "decodes with (so both show the same video), whose decoder reads each latent's neighbours "
                        "so that the video does not jump every 4 frames. vae.safetensors in the pack is a tiny "
                        "Wan2.1 VAE trained to approximate it, for the stock Load VAE.",
            inputs=[],
            outputs=[io.Vae.Output(display_name="vae")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(CodecVAE(PCALatentSpace.load(DemoBundle.load("mmpl").codec)))


class MMPLDemoTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_DemoTextEncode",
            display_name="MMPL Demo Text Encode",
            category=CATEGORY,
            description="Weight-free hashed text encoder of the demo models (no T5 needed): an ordinary CONDITIONING. "
                        "The demo knows only its synthetic world's words (coloured circles and squares over a "
                        "gradient): it warns on the node about any other word.",
            inputs=[io.String.Input("text", multiline=True, default=DEMO_PROMPT,
                                    tooltip="Prompt; the empty prompt encodes to zeros.")],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, text) -> io.NodeOutput:
        encoder = DemoBundle.load("mmpl").text_encoder()
        warning = unknown_words_message(encoder, [text])
        if warning is None:
            return io.NodeOutput([[encoder.encode(text), {}]])
        log.warning("MMPL Demo Text Encode: %s", warning)
        return io.NodeOutput([[encoder.encode(text), {}]], ui=ui.PreviewText(f"Warning: {warning}"))
