"""Planning: per-segment prompts, MicroPlanner (one segment's keyframes), MacroChain (the whole plan). Both planners
show their plan as a keyframe strip in the browser (keyframe_ui.py)."""
from __future__ import annotations

from comfy_api.latest import io

from mmpl_core.plan import GenerationSettings, Plan
from mmpl_core.plan_store import PlanFileError
from mmpl_core.prompt_bank import PromptBank
from mmpl_core.sampling import SamplerConfig
from mmpl_core.schedule.graph import MODES

from .comfy_adapters import ComfyWanVAE, conditioning_embedding, image_to_video_tensor, load_pipeline, node_id
from .keyframe_ui import strip_ui
from .schedule_nodes import cache_store, run_scheduled
from .types import (
    CATEGORY, DeviceSet, MMPLBridge, MMPLDevices, MMPLModel, MMPLModelInfo, MMPLPlan, MMPLPrompts, PlanValue,
    SegmentPromptList, node_schema, sampler_inputs,
)

REVIEW_FIRST, WHILE_PLANNING = "review first (plan only)", "while planning"


def size_inputs() -> list:
    return [
        io.Int.Input("width", default=832, min=16, max=4096, step=16, tooltip="Video width (multiple of 16)."),
        io.Int.Input("height", default=480, min=16, max=4096, step=16, tooltip="Video height (multiple of 16)."),
    ]


def conditioning_inputs() -> list:
    return [
        io.Conditioning.Input("positive", tooltip="Prompt of every segment (unless segment prompts are given)."),
        io.Conditioning.Input("negative", tooltip="Negative prompt (used when cfg > 1)."),
    ]


def prompt_bank(model: MMPLModelInfo, positive, negative, segment_prompts: SegmentPromptList | None):
    """The bank of embeddings, the labels of the segments' prompts, and the negative prompt's label."""
    bank = PromptBank(fallback=model.text_encoder)
    bank, positive_label = bank.with_embedding(conditioning_embedding(positive, "positive"))
    bank, negative_label = bank.with_embedding(conditioning_embedding(negative, "negative"))
    labels = [positive_label]
    if segment_prompts is not None:
        labels = []
        for embedding in segment_prompts.embeddings:
            bank, label = bank.with_embedding(embedding)
            labels.append(label)
    return bank, labels, negative_label


def first_frame(image, vae: ComfyWanVAE | None, settings: GenerationSettings):
    """IMAGE → [3, H, W] in [-1, 1] for image-to-video, checked against the video size."""
    if image is None:
        return None
    if vae is None:
        raise ValueError("image: image-to-video needs a VAE to encode the image (connect the VAE / bridge input)")
    if image.shape[0] != 1 or tuple(image.shape[1:3]) != (settings.height, settings.width):
        raise ValueError(
            f"image: expected one image of {settings.width}x{settings.height} (the video size), got "
            f"{image.shape[0]} image(s) of {image.shape[2]}x{image.shape[1]}"
        )
    return image_to_video_tensor(image)[0]


def settings_of(seed, steps, cfg, shift, sampler, width, height, bridge=None, loop=False,
                devices: DeviceSet | None = None, kv_dtype: str = "compute") -> GenerationSettings:
    """The plan's settings from the node's widgets and the scheduler's mode and CFG setting (a bad value raises a
    ValueError naming its field)."""
    return GenerationSettings(
        seed=seed, height=height, width=width, sampler=SamplerConfig(sampler, steps, shift, cfg),
        bridge=bridge.mode if bridge is not None else "vae",
        color_anchor=bridge.color_anchor if bridge is not None else 0.0, loop=loop,
        handoff=MODES[devices.mode] if devices is not None else "terminal",
        cfg_branches=devices.cfg_branches if devices is not None else "batched", kv_dtype=kv_dtype,
    )


def plan_scheduled(model, pipeline, plan: Plan, devices, node_id, populate: bool = False) -> tuple[Plan, dict]:
    """Plan what `plan` still needs through the scheduler (and, with `populate`, populate every segment as soon as
    its plan exists, on free devices). An interrupted run resumes from its cache folder, keyed by the plan it
    started from (planning is deterministic: the same start gives the same plans)."""
    store = cache_store(plan)
    if store.exists():
        try:
            stored = store.load()
            if len(stored) == len(plan) and stored.settings == plan.settings and stored.layout == plan.layout:
                plan = stored
        except PlanFileError:
            pass  # a damaged cache is simply recomputed
    wanted = list(range(len(plan))) if populate else []
    return run_scheduled(model, pipeline, plan, devices, node_id, populate=wanted, store=store, shown=wanted)


class MMPLSegmentPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_SegmentPrompts",
            display_name="MMPL Segment Prompts",
            category=CATEGORY,
            description="One prompt per segment, one per line (empty lines are skipped).",
            inputs=[
                io.String.Input("text", multiline=True, default="", tooltip="Line k is the prompt of segment k."),
                io.Clip.Input("clip", optional=True, tooltip="Text encoder (e.g. umT5 for Wan2.1). Without it the "
                              "demo models' hashed encoder is used."),
            ],
            outputs=[MMPLPrompts.Output(display_name="segment_prompts")],
        )

    @classmethod
    def execute(cls, text, clip=None) -> io.NodeOutput:
        lines = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not lines:
            raise ValueError("text: give at least one prompt line (one line per segment)")
        if clip is None:
            from mmpl_core.demo import DemoBundle

            encoder = DemoBundle.load("mmpl").text_encoder()
            embeddings = tuple(encoder.encode(line) for line in lines)
        else:
            embeddings = tuple(
                conditioning_embedding(clip.encode_from_tokens_scheduled(clip.tokenize(line)), "clip") for line in lines
            )
        return io.NodeOutput(SegmentPromptList(embeddings, lines))


class MMPLMicroPlanner(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="MMPL_MicroPlanner",
            display_name="MMPL Micro Planner",
            category=CATEGORY,
            description="Plans the keyframes of one segment (early, mid and terminal latents, jointly, at their true "
                        "time positions). Look at them with Keyframe Preview; extend with MacroChain.",
            inputs=[
                MMPLModel.Input("mmpl_model"), *conditioning_inputs(), *size_inputs(), *sampler_inputs(),
                io.Image.Input("image", optional=True, tooltip="First frame (image-to-video layouts)."),
                io.Vae.Input("vae", optional=True, tooltip="Encodes the image (image-to-video only)."),
            ],
            outputs=[MMPLPlan.Output(display_name="plan")],
            hidden=[io.Hidden.unique_id],
            has_intermediate_output=True,  # cached: its strip is sent again (newer ComfyUI)
        )

    @classmethod
    def execute(cls, mmpl_model, positive, negative, width, height, seed, steps, cfg, shift, sampler,
                image=None, vae=None) -> io.NodeOutput:
        settings = settings_of(seed, steps, cfg, shift, sampler, width, height, kv_dtype=mmpl_model.kv_dtype)
        bank, labels, negative_label = prompt_bank(mmpl_model, positive, negative, None)
        comfy_vae = ComfyWanVAE(vae) if vae is not None else None
        pipeline = load_pipeline(mmpl_model, comfy_vae, bank, negative_label, settings, "plan")
        plan = pipeline.new_plan(labels, 1, settings, first_frame(image, comfy_vae, settings))
        value = PlanValue(plan_scheduled(mmpl_model, pipeline, plan, None, node_id(cls))[0], bank)
        return io.NodeOutput(value, ui=strip_ui(value, comfy_vae))


class MMPLMacroChain(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="MMPL_MacroChain",
            display_name="MMPL Macro Chain",
            category=CATEGORY,
            description="Plans a long video: segment k+1 starts from segment k's bridged terminal keyframes. Given a "
                        "plan, it continues it (its own settings win): new segments are appended, and re-planning "
                        "starts at the first unplanned or edited segment, so earlier segments stay as they are.",
            inputs=[
                MMPLModel.Input("mmpl_model"), *conditioning_inputs(),
                MMPLBridge.Input("bridge", tooltip="From MMPL VAE Bridge."),
                io.Int.Input("segments", default=4, min=1, max=1000, tooltip="Number of segments (81 frames each for "
                             "Wan2.1, overlapping by 5)."),
                *size_inputs(), *sampler_inputs(),
                MMPLPrompts.Input("segment_prompts", optional=True, tooltip="Per-segment prompts (one or S lines)."),
                io.Image.Input("image", optional=True, tooltip="First frame (image-to-video layouts)."),
                MMPLPlan.Input("plan", optional=True, tooltip="A plan to continue (e.g. after Keyframe Editor)."),
                MMPLDevices.Input("devices", optional=True, tooltip="From MMPL Multi-GPU Scheduler: the devices to run "
                                  "on, and (for a new plan) the scheduling mode and CFG setting."),
                io.Combo.Input("populate", options=[REVIEW_FIRST, WHILE_PLANNING], default=REVIEW_FIRST, optional=True,
                               tooltip="review first: plan only; look at the keyframes (Keyframe Preview / Editor), "
                                       "then populate with Content Populator. while planning: populate each segment "
                                       "on a free device as soon as its plan exists while the plan chain moves on "
                                       "(the paper's adaptive scheduling); Content Populator then has nothing left "
                                       "to do."),
                io.Boolean.Input("loop", default=False, optional=True,
                                 tooltip="End where the video began: the last segment is planned toward the first "
                                         "segment's starting frames, and the repeated frames are dropped when "
                                         "decoding, so the video plays in a loop (2 segments or more)."),
            ],
            outputs=[MMPLPlan.Output(display_name="plan")],
            hidden=[io.Hidden.unique_id],
            has_intermediate_output=True,  # cached: its strip is sent again (newer ComfyUI)
        )

    @classmethod
    def execute(cls, mmpl_model, positive, negative, bridge, segments, width, height, seed, steps, cfg, shift,
                sampler, segment_prompts=None, image=None, plan=None, devices=None, populate=REVIEW_FIRST,
                loop=False) -> io.NodeOutput:
        bank, labels, negative_label = prompt_bank(mmpl_model, positive, negative, segment_prompts)
        role = "segment" if populate == WHILE_PLANNING else "plan"
        if len(labels) not in (1, segments):
            raise ValueError(f"segment_prompts: {len(labels)} lines for {segments} segments; give one or {segments}")
        if plan is None:
            settings = settings_of(seed, steps, cfg, shift, sampler, width, height, bridge, loop, devices,
                                   mmpl_model.kv_dtype)
            pipeline = load_pipeline(mmpl_model, bridge.vae, bank, negative_label, settings, role)
            try:
                current = pipeline.new_plan(labels, segments, settings, first_frame(image, bridge.vae, settings))
            except ValueError as err:
                raise ValueError(f"loop: {err}" if loop and "loop" in str(err) else str(err)) from err
        else:
            if image is not None:
                raise ValueError("image: a continued plan already has its first frame; disconnect the image")
            bank = bank.merged(plan.prompts)
            pipeline = load_pipeline(mmpl_model, bridge.vae, bank, negative_label, plan.plan.settings, role)
            try:
                pipeline.check_plan(plan.plan)
            except ValueError as err:
                raise ValueError(f"plan: {err}") from err
            current = plan.plan.extended(max(segments, len(plan.plan)), labels[0])
            for k in range(len(plan.plan), len(current)) if len(labels) > 1 else ():
                current = current.with_prompt(k, labels[k])
        result, schedule = plan_scheduled(mmpl_model, pipeline, current, devices, node_id(cls),
                                          populate == WHILE_PLANNING)
        changed = None
        if plan is not None:  # what the edits and this re-plan changed (kept segments stay bit-identical)
            changed = tuple(sorted(set(plan.changed or ()) | set(result.changed_segments(plan.plan))))
        value = PlanValue(result, bank, changed)
        return io.NodeOutput(value, ui={**strip_ui(value, bridge.vae), "mmpl_schedule": [schedule]})
