"""Checks of the example workflows' loops, keyframe targets and join scores (issue 19), run by
test_comfy_workflows.py on every example: what a Decode Video (or a Content Populator with a VAE) reports about the
joins, and that a saved plan records the keyframes the Keyframe Editor gave, held exactly."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from mmpl_core.keyframes import target_frame
from mmpl_core.plan_store import load_plan


def loops(prompt: dict) -> bool:
    return any(v["class_type"] == "MMPL_MacroChain" and v["inputs"].get("loop") for v in prompt.values())


def check_joins(prompt: dict, outputs: dict, segments: int) -> None:
    """Decode Video, and a Content Populator given a VAE, show one score per join (and the way back in a loop)."""
    nodes = [k for k, v in prompt.items() if v["class_type"] == "MMPL_DecodeVideo"
             or (v["class_type"] == "MMPL_ContentPopulator" and "vae" in v["inputs"])]
    names = [f"S{k + 1}→S{k + 2}" for k in range(segments - 1)] + ([f"S{segments}→S1"] if loops(prompt) else [])
    for node in nodes:
        [report] = outputs[node]["mmpl_joins"]
        assert [j["join"] for j in report["joins"]] == names
        limits = report["thresholds"]
        for j in report["joins"]:
            above = j["seam_block"] > limits["seam"] or j["colour_step"] > limits["colour_step"]
            assert j["seam"] >= 0 and j["flagged"] == above
        assert outputs[node]["text"][0].startswith(f"join report ({len(names)} joins")


def check_saved_targets(prompt: dict, output_dir: Path, layout) -> None:
    """Every plan a Save Plan wrote records the targets its Keyframe Editors gave, and holds them exactly."""
    given = set()
    for v in prompt.values():
        if v["class_type"] == "MMPL_KeyframeEditor":
            for edit in json.loads(v["inputs"]["edits"] or "{}").get("edits", []):
                if edit["op"] == "target":
                    given.add((edit["segment"], target_frame(layout, edit.get("role", edit.get("frame")))))
    for v in prompt.values():
        if v["class_type"] != "MMPL_SavePlan":
            continue
        plan = load_plan(output_dir / v["inputs"]["name"])
        assert {(k, t.frame) for k, s in enumerate(plan.segments) for t in s.targets} == given
        for seg in plan.segments:
            for t in seg.targets:
                held = t.latent if t.source is None else plan.segments[t.source[0]].latents.latents[:, t.source[1]]
                assert torch.equal(seg.latents.latents[:, t.frame], held)
