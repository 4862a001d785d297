"""Join scores on Content Populator and Decode Video: the join report (mmpl_core.joins) as the node's text, and a
``mmpl.joins`` message so every keyframe strip that shows the same plan marks the joins above the thresholds.

The `ui` carries ``text`` (the report) and ``mmpl_joins`` (one entry per join: before, after, frame, seam,
seam_block, colour_step, flagged, plus the plan id and thresholds); web/js/mmpl_joins.js shows them.
"""
from __future__ import annotations

import logging
from dataclasses import asdict

import torch

from mmpl_core.joins import JoinThresholds, format_join_report, join_report
from mmpl_core.plan import Plan
from mmpl_core.populate import decode_segments, plan_identity
from mmpl_core.stitch import stitch_stream

from .keyframe_ui import send_to_browser

JOINS_EVENT = "mmpl.joins"
log = logging.getLogger(__name__)


def join_ui(plan: Plan, images: torch.Tensor, node: str | None) -> dict:
    """The `ui` of a node that decoded `plan` into the stitched IMAGE frames `images` [N, H, W, 3] in [0, 1]."""
    frames = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    thresholds = JoinThresholds()
    try:
        scores = join_report(frames, plan.layout, len(plan), handoff=plan.settings.handoff, loop=plan.settings.loop,
                             fps=plan.settings.fps, thresholds=thresholds)
    except ImportError as err:  # the metrics' optional dependencies
        return {"text": [f"join report unavailable: {err}"]}
    data = {"node": node, "plan": plan_identity(plan), "thresholds": asdict(thresholds),
            "joins": [{**asdict(s), "join": s.name} for s in scores]}
    try:
        send_to_browser(JOINS_EVENT, data)
    except Exception as err:  # noqa: BLE001 — showing scores must never fail the node
        log.warning("mmpl: could not send %s: %s", JOINS_EVENT, err)
    return {"text": [format_join_report(scores, thresholds)], "mmpl_joins": [data]}


def decoded_join_ui(plan: Plan, vae, node: str | None) -> dict:
    """Decode a populated plan (segment by segment), stitch it as Decode Video does, and score its joins."""
    from .comfy_adapters import video_to_image

    parts = stitch_stream(decode_segments(plan, vae), plan.layout, loop=plan.settings.loop)
    return join_ui(plan, torch.cat([video_to_image(part) for part in parts]), node)
