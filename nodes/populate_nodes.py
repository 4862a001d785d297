"""Populating and decoding: VAE Bridge settings, Content Populator (over the scheduler of schedule_nodes.py), Decode
Video."""
from __future__ import annotations

from dataclasses import replace

import torch
from comfy_api.latest import io

from mmpl_core.plan import parse_segment_selection
from mmpl_core.plan_store import PlanFileError
from mmpl_core.populate import adopt_populated, decode_segments, segments_to_populate
from mmpl_core.stitch import stitch_stream

from .comfy_adapters import (
    ComfyWanVAE, NodeProgress, check_interrupt, load_pipeline, node_id, to_latent_dict, video_to_image, video_value,
)
from .join_ui import decoded_join_ui, join_ui
from .schedule_nodes import cache_store, run_scheduled
from .types import CATEGORY, BridgeSettings, MMPLBridge, MMPLDevices, MMPLModel, MMPLPlan


class MMPLVAEBridge(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_VAEBridge",
            display_name="MMPL VAE Bridge",
            category=CATEGORY,
            description="How segment k's terminal keyframes become segment k+1's first latents: 'vae' decodes "
                        "[f0, f19, f19, f20] and re-encodes the last 5 frames (MMPL); 'naive' reuses the latents.",
            inputs=[
                io.Vae.Input("vae", optional=True, tooltip="The Wan2.1 VAE (needed by the 'vae' mode and image input)."),
                io.Combo.Input("mode", options=["vae", "naive"], default="vae"),
                io.Float.Input("color_anchor", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Pull each bridged context's per-channel latent statistics towards segment "
                                       "1's keyframes (0 = off): counters colour drift over long chains."),
            ],
            outputs=[MMPLBridge.Output(display_name="bridge")],
        )

    @classmethod
    def execute(cls, mode, color_anchor, vae=None) -> io.NodeOutput:
        if mode == "vae" and vae is None:
            raise ValueError("vae: the 'vae' bridge mode needs a VAE (or choose mode 'naive')")
        return io.NodeOutput(BridgeSettings(ComfyWanVAE(vae) if vae is not None else None, mode, color_anchor))


class MMPLContentPopulator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_ContentPopulator",
            display_name="MMPL Content Populator",
            category=CATEGORY,
            description="Fills the frames between the planned keyframes (4–9, then 13–18 for Wan2.1), on the devices "
                        "of a connected Multi-GPU Scheduler in parallel. Segments a Macro Chain already populated "
                        "while planning are kept as they are. Finished segments are kept under output/mmpl/cache, "
                        "so an interrupted run resumes.",
            inputs=[
                MMPLModel.Input("mmpl_model"), MMPLPlan.Input("plan"),
                io.String.Input("segments", default="all", tooltip="'all' or 1-based segments, e.g. '1,3-5'."),
                MMPLDevices.Input("devices", optional=True, tooltip="Populate on several devices in parallel "
                                  "(Multi-GPU Scheduler)."),
                io.Vae.Input("vae", optional=True, tooltip="With a VAE, a fully populated plan is decoded and every "
                             "join scored (seam and colour step), shown on the node and marked on the keyframe "
                             "strips."),
            ],
            outputs=[
                MMPLPlan.Output(display_name="plan"),
                io.Latent.Output(display_name="latent", tooltip="The chosen segments' latents, one batch item per "
                                 "segment. MMPL Decode Video stitches the plan into frames."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, mmpl_model, plan, segments, devices=None, vae=None) -> io.NodeOutput:
        try:
            chosen = parse_segment_selection(segments, len(plan.plan))
        except ValueError as err:
            raise ValueError(f"segments: {err}") from err
        pipeline = load_pipeline(mmpl_model, None, plan.prompts, plan.plan.negative_prompt, plan.plan.settings,
                                 "populate")
        try:
            pipeline.check_plan(plan.plan)
        except ValueError as err:
            raise ValueError(f"plan: {err}") from err
        store, current = cache_store(plan.plan), plan.plan
        if store.exists():
            try:
                current = adopt_populated(current, store.load())
            except PlanFileError:
                pass  # a damaged cache is simply recomputed
        try:
            todo = segments_to_populate(current, chosen)
        except ValueError as err:
            raise ValueError(f"plan: {err}") from err
        current, _ = run_scheduled(mmpl_model, pipeline, current, devices, node_id(cls), populate=todo, store=store,
                                   shown=chosen, replan=False)
        latents = torch.stack([current.segments[k].latents.latents for k in chosen])
        done = vae is not None and all(s == "populated" for s in current.statuses())
        shown = decoded_join_ui(current, ComfyWanVAE(vae), node_id(cls)) if done else None
        return io.NodeOutput(replace(plan, plan=current), to_latent_dict(latents), ui=shown)


class MMPLDecodeVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_DecodeVideo",
            display_name="MMPL Decode Video",
            category=CATEGORY,
            description="Decodes a populated plan segment by segment and stitches the frames (the 5 frames each "
                        "segment shares with the previous one appear once): 81 + 76·(S−1) frames for Wan2.1 (76·S "
                        "for a loop, which also drops its last segment's repeat of the first frames). Shows the join "
                        "scores (seam and colour step of every join) and marks the joins above the thresholds on the "
                        "keyframe strips.",
            inputs=[MMPLPlan.Input("plan"), io.Vae.Input("vae"),
                    io.Int.Input("fix_joins", default=0, min=0, max=64, optional=True,
                                 tooltip="Join correction: carry the previous segment's colour statistics into each "
                                         "new segment's first N frames, fading out (0 = off). docs/benchmarks.md "
                                         "says whether it helps.")],
            outputs=[io.Image.Output(display_name="images"),
                     io.Video.Output(display_name="video", tooltip="The frames at the plan's frame rate (16 fps for "
                                     "Wan2.1), ready for Save Video.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, plan, vae, fix_joins=0) -> io.NodeOutput:
        comfy_vae = ComfyWanVAE(vae)
        statuses = plan.plan.statuses()
        missing = [k + 1 for k, s in enumerate(statuses) if s != "populated"]
        if missing:
            raise ValueError(f"plan: segments {missing} are not populated (run MMPL Content Populator first)")
        progress = NodeProgress(len(statuses), node_id(cls))

        def segments():
            for video in decode_segments(plan.plan, comfy_vae):
                check_interrupt()
                progress.step()
                yield video

        stitched = stitch_stream(segments(), plan.plan.layout, loop=plan.plan.settings.loop, fix_joins=fix_joins)
        images = torch.cat([video_to_image(part) for part in stitched])
        return io.NodeOutput(images, video_value(images, plan.plan.settings.fps),
                             ui=join_ui(plan.plan, images, node_id(cls)))
