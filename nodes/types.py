"""The pack's ComfyUI types and the immutable values that travel through them (nodes never mutate an input:
ComfyUI caches outputs by inputs)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from comfy_api.latest import io

from mmpl_core.layout import SegmentLayout
from mmpl_core.plan import Plan
from mmpl_core.prompt_bank import PromptBank
from mmpl_core.sampling import SOLVERS

MMPLModel = io.Custom("MMPL_MODEL")
MMPLPlan = io.Custom("MMPL_PLAN")
MMPLBridge = io.Custom("MMPL_BRIDGE")
MMPLDevices = io.Custom("MMPL_DEVICES")
MMPLPrompts = io.Custom("MMPL_PROMPTS")

CATEGORY = "MMPL Long Video"

# Optional io.Schema fields of newer ComfyUI versions (0.3.75's Schema, a dataclass, raises TypeError on them).
NEWER_SCHEMA_FIELDS = frozenset({"has_intermediate_output", "search_aliases", "essentials_category", "is_dev_only",
                                 "accept_all_inputs", "price_badge"})


def node_schema(**fields) -> io.Schema:
    """io.Schema(**fields), leaving out those of NEWER_SCHEMA_FIELDS this ComfyUI does not know (any other unknown
    field still raises). E.g. has_intermediate_output=True: a cached strip node sends its UI again (ComfyUI ≥ 0.19)."""
    known = {f.name for f in dataclasses.fields(io.Schema)}
    return io.Schema(**{k: v for k, v in fields.items() if k in known or k not in NEWER_SCHEMA_FIELDS})


@dataclass(frozen=True)
class MMPLModelInfo:
    """A Wan2.1 diffusion model (ComfyUI ModelPatcher, MMPL weights patched in) and the segment layout it runs.

    text_encoder: the demo model's hashed encoder (plain-text prompts work without a CLIP); None for real models.
    kv_cache: where the KV cache lives while sampling, "auto" (from the device's memory), "device" or "cpu" (same
    results). kv_dtype: its storage for new plans, "compute" or "float8_e4m3fn" (a plan setting: it changes bits).
    """

    patcher: object
    layout: SegmentLayout
    name: str
    text_encoder: object | None = None
    kv_cache: str = "auto"
    kv_dtype: str = "compute"


@dataclass(frozen=True)
class PlanValue:
    """MMPL_PLAN: a plan plus the prompt embeddings its segments' prompt labels refer to.

    changed: the segments that differ from the plan this one was edited or re-planned from (Keyframe Editor, Macro
    Chain continuing a plan), for the browser's keyframe strip; None for a plan made from scratch.
    """

    plan: Plan
    prompts: PromptBank
    changed: tuple[int, ...] | None = None


@dataclass(frozen=True)
class BridgeSettings:
    """MMPL_BRIDGE: how a segment's terminal keyframes become the next segment's first latents."""

    vae: object | None  # ComfyWanVAE, None for the naive bridge
    mode: str
    color_anchor: float


@dataclass(frozen=True)
class DeviceSet:
    """MMPL_DEVICES: the devices a run uses (one model replica each) and how it is scheduled. mode and
    cfg_branches apply to plans made with them (they decide what is generated); policy None = chosen by simulation."""

    devices: tuple[str, ...]
    max_parallel: int
    mode: str = "throughput"
    cfg_branches: str = "batched"
    policy: str | None = None


@dataclass(frozen=True)
class SegmentPromptList:
    """MMPL_PROMPTS: one prompt embedding [1, L, D] per segment, in order (and the lines they came from)."""

    embeddings: tuple
    lines: tuple[str, ...]


def sampler_inputs() -> list:
    """The KSampler-style widgets every sampling node shares."""
    return [
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Noise of each chunk is seeded by (seed, segment, frame group)."),
        io.Int.Input("steps", default=20, min=1, max=200, tooltip="Denoising steps per frame group."),
        io.Float.Input("cfg", default=5.0, min=1.0, max=30.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance scale (1 = off, no negative pass)."),
        io.Float.Input("shift", default=5.0, min=0.1, max=30.0, step=0.1,
                       tooltip="Flow-matching sigma shift (Wan2.1: 5 at 720p, 3 at 480p and for the demo model)."),
        io.Combo.Input("sampler", options=list(SOLVERS), default=SOLVERS[0],
                       tooltip="Flow-matching solver (diffusers UniPC or Euler on the official Wan schedule)."),
    ]
