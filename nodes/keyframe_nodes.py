"""Keyframes: Keyframe Preview (decode a plan's keyframes, labelled) and Keyframe Editor (lock / re-roll / prompt /
replace, from a JSON widget so a saved workflow reproduces the edits). Both show the plan as a keyframe strip in the
browser (keyframe_ui.py, web/js/); on the editor, the strip's buttons write the JSON."""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch
from PIL import Image
import folder_paths
from comfy_api.latest import io

from mmpl_core.edits import EditError, apply_edits, parse_edits
from mmpl_core.keyframes import contact_sheet, decode_keyframes, encode_keyframe_image

from .comfy_adapters import ComfyWanVAE, conditioning_embedding, image_to_video_tensor, video_to_image
from .keyframe_ui import strip_ui
from .types import CATEGORY, MMPLPlan, node_schema

EDITS_EXAMPLE = '{"edits": []}'


class MMPLKeyframePreview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="MMPL_KeyframePreview",
            display_name="MMPL Keyframe Preview",
            category=CATEGORY,
            description="Decodes the planned keyframes of every planned segment: look at the storyline before "
                        "paying for populating. Shows them as a strip, one row per segment, labelled with latent "
                        "index and time; click a keyframe to see it large.",
            inputs=[MMPLPlan.Input("plan"), io.Vae.Input("vae")],
            outputs=[
                io.Image.Output(display_name="keyframes", tooltip="Segment by segment, in keyframe order."),
                io.Image.Output(display_name="contact_sheet"),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, plan, vae) -> io.NodeOutput:
        comfy_vae, layout, segments = ComfyWanVAE(vae), plan.plan.layout, plan.plan.segments
        planned = [k for k, s in enumerate(segments) if s.status(layout) in ("planned", "populated")]
        if not planned:
            raise ValueError("plan: no segment is planned yet")
        rows = {k: decode_keyframes(comfy_vae, segments[k].latents, layout.keyframes) for k in planned}
        sheet = contact_sheet(list(rows.values()), layout, plan.plan.settings.fps, layout.keyframes,
                              handoff=plan.plan.settings.handoff)
        sheet = (torch.from_numpy(np.array(sheet)).float() / 255.0)[None]
        keyframes = torch.cat([video_to_image(row) for row in rows.values()])
        return io.NodeOutput(keyframes, sheet, ui=strip_ui(plan, comfy_vae, decoded=rows))


def load_input_image(name: str) -> torch.Tensor:
    """A file of ComfyUI's input folder (e.g. uploaded through /upload/image, maybe into a subfolder such as
    "mmpl/key.png"; "name [output]" / "[temp]" name another folder, as in ComfyUI) → IMAGE [1, H, W, 3]. Names that
    lead outside their folder are refused."""
    relative, base = folder_paths.annotated_filepath(name)
    folder = os.path.realpath(base or folder_paths.get_input_directory())
    path = os.path.realpath(os.path.join(folder, relative))
    if os.path.commonpath([folder, path]) != folder or not os.path.isfile(path):
        where = "ComfyUI's input folder" if base is None else folder
        raise ValueError(f"image file {name!r} is not in {where}")
    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]


class MMPLKeyframeEditor(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="MMPL_KeyframeEditor",
            display_name="MMPL Keyframe Editor",
            category=CATEGORY,
            description="Applies hand edits to a plan: lock a segment, re-roll it with a new seed, change its prompt, "
                        "replace a keyframe by an image, or give a keyframe target (an image, or a keyframe of an "
                        "earlier segment, as a segment's mid or terminal keyframe: the segment is planned anew with "
                        "it held, so its plan bends toward it). Feed the result to MacroChain's plan input to re-plan "
                        "from the first edited segment.",
            inputs=[
                MMPLPlan.Input("plan"),
                io.String.Input("edits", multiline=True, default=EDITS_EXAMPLE,
                                tooltip='JSON: {"edits": [{"op": "lock"|"unlock"|"reroll"|"prompt"|"replace"|"target", '
                                        '"segment": 0-based, "seed", "text", "frame": latent index, "image": index '
                                        'into images or an input file name; target: "role": "mid"|"terminal" (or '
                                        '"frame"), and "image" or "from": [segment, frame]}]}'),
                io.Vae.Input("vae", optional=True, tooltip="Encodes replacement images."),
                io.Image.Input("images", optional=True, tooltip="Replacement and target keyframe images (\"image\": "
                               "their index in this batch)."),
                io.Clip.Input("clip", optional=True, tooltip="Encodes edited prompts (without it the demo "
                              "models' hashed encoder reads the text)."),
            ],
            outputs=[MMPLPlan.Output(display_name="plan")],
            has_intermediate_output=True,  # its strip comes back when a run takes it from the cache
        )

    @classmethod
    def execute(cls, plan, edits, vae=None, images=None, clip=None) -> io.NodeOutput:
        try:
            parsed = parse_edits(edits)
        except EditError as err:
            raise ValueError(f"edits: {err}") from err
        settings, bank = plan.plan.settings, plan.prompts

        def encode_image(ref, frame):
            if vae is None:
                raise EditError("vae: replacing a keyframe needs a VAE to encode the image")
            if isinstance(ref, int):
                if images is None or not 0 <= ref < images.shape[0]:
                    count = 0 if images is None else images.shape[0]
                    raise EditError(f"images: image {ref} requested, {count} connected")
                picture = images[ref : ref + 1]
            else:
                picture = load_input_image(ref)
            if tuple(picture.shape[1:3]) != (settings.height, settings.width):
                raise EditError(f"image {ref!r} is {picture.shape[2]}x{picture.shape[1]}, the video is "
                                f"{settings.width}x{settings.height}")
            return encode_keyframe_image(ComfyWanVAE(vae), image_to_video_tensor(picture)[0], frame)

        def encode_prompt(text):
            nonlocal bank
            if clip is None:
                return text
            tokens = clip.tokenize(text)
            bank, label = bank.with_embedding(conditioning_embedding(clip.encode_from_tokens_scheduled(tokens), "clip"))
            return label

        try:
            edited = apply_edits(plan.plan, parsed, encode_image=encode_image, encode_prompt=encode_prompt)
        except EditError as err:
            raise ValueError(f"edits: {err}") from err
        own = edited.changed_segments(plan.plan)
        changed = tuple(sorted(set(plan.changed or ()) | set(own)))
        shown = strip_ui(plan, ComfyWanVAE(vae) if vae is not None else None, changed=own)
        return io.NodeOutput(replace(plan, plan=edited, prompts=bank, changed=changed), ui=shown)
