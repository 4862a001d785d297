"""Populating and decoding: VAE Bridge settings, Multi-GPU Scheduler, Content Populator, Decode Video."""
from __future__ import annotations

import copy
import os
from dataclasses import replace

import torch
import folder_paths
from comfy_api.latest import io

from mmpl_core.plan import parse_segment_selection
from mmpl_core.plan_store import PlanFileError, PlanStore
from mmpl_core.populate import adopt_populated, decode_segments, plan_identity, segments_to_populate
from mmpl_core.schedule import PopulateWorker, populate_parallel
from mmpl_core.segment import SegmentSampler
from mmpl_core.stitch import stitch_stream

from .comfy_adapters import (
    INTERRUPT, ComfyWanVAE, NodeProgress, check_interrupt, load_pipeline, node_id, to_latent_dict, video_to_image,
)
from .keyframe_ui import SegmentProgress
from .types import CATEGORY, BridgeSettings, DeviceSet, MMPLBridge, MMPLDevices, MMPLModel, MMPLPlan


def cache_store(plan) -> PlanStore:
    """Where finished segments of this plan are kept, so an interrupted populate resumes (output/mmpl/cache/<id>)."""
    return PlanStore(os.path.join(folder_paths.get_output_directory(), "mmpl", "cache", plan_identity(plan)))


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


class MMPLMultiGPUScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_MultiGPUScheduler",
            display_name="MMPL Multi-GPU Scheduler",
            category=CATEGORY,
            description="Devices that populate planned segments in parallel, one model replica each. Results are "
                        "identical to sequential populating.",
            inputs=[
                io.String.Input("devices", default="cuda:0,cuda:1", tooltip="Comma-separated torch devices."),
                io.Int.Input("max_parallel", default=0, min=0, max=64, tooltip="0 = one worker per device."),
            ],
            outputs=[MMPLDevices.Output(display_name="devices")],
        )

    @classmethod
    def execute(cls, devices, max_parallel) -> io.NodeOutput:
        names = tuple(d.strip() for d in devices.split(",") if d.strip())
        if not names:
            raise ValueError("devices: give at least one device, e.g. 'cuda:0,cuda:1'")
        for name in names:
            try:
                device = torch.device(name)
            except RuntimeError as err:
                raise ValueError(f"devices: {name!r} is not a torch device ({err})") from None
            if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
                raise ValueError(f"devices: {name} is not available on this machine")
        return io.NodeOutput(DeviceSet(names, max_parallel or len(names)))


def populate_workers(pipeline, plan, devices: DeviceSet | None) -> list[PopulateWorker]:
    config = plan.settings.sampler
    main = PopulateWorker(str(pipeline.device), pipeline.sampler(config), pipeline.prompt_fn(config))
    if devices is None:
        return [main]
    replicas: dict[str, torch.nn.Module] = {str(pipeline.device): pipeline.model}
    workers = []
    for name in devices.devices[: devices.max_parallel]:
        device = torch.device(name)
        if str(device) not in replicas:
            replicas[str(device)] = copy.deepcopy(pipeline.model).to(device)
        sampler = SegmentSampler(replicas[str(device)], config, device=device, dtype=pipeline.dtype)
        workers.append(PopulateWorker(name, sampler, pipeline.prompt_fn(config)))
    return workers


class MMPLContentPopulator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_ContentPopulator",
            display_name="MMPL Content Populator",
            category=CATEGORY,
            description="Fills the frames between the planned keyframes (4–9, then 13–18 for Wan2.1). Finished "
                        "segments are kept under output/mmpl/cache, so an interrupted run resumes.",
            inputs=[
                MMPLModel.Input("mmpl_model"), MMPLPlan.Input("plan"),
                io.String.Input("segments", default="all", tooltip="'all' or 1-based segments, e.g. '1,3-5'."),
                MMPLDevices.Input("devices", optional=True, tooltip="Populate in parallel (Multi-GPU Scheduler)."),
            ],
            outputs=[
                MMPLPlan.Output(display_name="plan"),
                io.Latent.Output(display_name="latent", tooltip="The chosen segments' latents, one batch item per "
                                 "segment. MMPL Decode Video stitches the plan into frames."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, mmpl_model, plan, segments, devices=None) -> io.NodeOutput:
        try:
            chosen = parse_segment_selection(segments, len(plan.plan))
        except ValueError as err:
            raise ValueError(f"segments: {err}") from err
        pipeline = load_pipeline(mmpl_model, None, plan.prompts, plan.plan.negative_prompt)
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
        progress = NodeProgress(pipeline.steps_per_segment(current, "populate") * len(todo), node_id(cls))
        shown, finished = SegmentProgress(current, node_id(cls)), set()  # the browser's strips follow along
        for k in chosen:
            shown.send(k, "planned" if k in todo else "done")

        def segment_done(k, populated):
            store.save(populated)
            finished.add(k)
            shown.send(k, "done")

        try:
            current = populate_parallel(
                current, populate_workers(pipeline, current, devices), segments=todo, on_step=progress.step,
                on_start=lambda k, worker: shown.send(k, "populating", worker), on_segment=segment_done,
                passthrough=(INTERRUPT,),
            )
        finally:
            for k in sorted(set(todo) - finished):  # interrupted or failed: back to planned
                shown.send(k, "planned")
        latents = torch.stack([current.segments[k].latents.latents for k in chosen])
        return io.NodeOutput(replace(plan, plan=current), to_latent_dict(latents))


class MMPLDecodeVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_DecodeVideo",
            display_name="MMPL Decode Video",
            category=CATEGORY,
            description="Decodes a populated plan segment by segment and stitches the frames (the 5 frames each "
                        "segment shares with the previous one appear once): 81 + 76·(S−1) frames for Wan2.1.",
            inputs=[MMPLPlan.Input("plan"), io.Vae.Input("vae")],
            outputs=[io.Image.Output(display_name="images")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, plan, vae) -> io.NodeOutput:
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

        frames = [video_to_image(part) for part in stitch_stream(segments(), plan.plan.layout)]
        return io.NodeOutput(torch.cat(frames))
