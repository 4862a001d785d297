"""Save Plan / Load Plan: a plan folder (mmpl_core.plan_store) plus the prompt embeddings it refers to, under
ComfyUI's output folder, so plans survive restarts and can be shared or populated later, elsewhere."""
from __future__ import annotations

from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from mmpl_core.plan_store import PlanFileError, load_plan, save_plan
from mmpl_core.prompt_bank import PromptBank

from .types import CATEGORY, MMPLPlan, PlanValue

EMBEDDINGS_FILE = "prompt_embeddings.safetensors"


def plan_folder(name: str) -> Path:
    """output/<name>, refusing names that leave the output folder."""
    root = Path(folder_paths.get_output_directory()).resolve()
    folder = (root / name.strip()).resolve()
    if not name.strip() or root not in folder.parents:
        raise ValueError(f"name: {name!r} must be a folder name inside ComfyUI's output folder, e.g. 'mmpl/my_plan'")
    return folder


class MMPLSavePlan(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_SavePlan",
            display_name="MMPL Save Plan",
            category=CATEGORY,
            description="Writes the plan (keyframes, populated segments, settings) and its prompt embeddings to "
                        "output/<name>/. Saving again only rewrites what changed.",
            inputs=[MMPLPlan.Input("plan"), io.String.Input("name", default="mmpl/plan")],
            outputs=[MMPLPlan.Output(display_name="plan")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, plan, name) -> io.NodeOutput:
        folder = plan_folder(name)
        save_plan(plan.plan, folder)
        plan.prompts.save(folder / EMBEDDINGS_FILE)
        summary = f"{name}: {len(plan.plan)} segments ({', '.join(plan.plan.statuses())})"
        return io.NodeOutput(plan, ui=ui.PreviewText(summary))


class MMPLLoadPlan(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MMPL_LoadPlan",
            display_name="MMPL Load Plan",
            category=CATEGORY,
            description="Reads a plan folder written by Save Plan (or by the `mmpl` command line) from output/<name>/.",
            inputs=[io.String.Input("name", default="mmpl/plan")],
            outputs=[MMPLPlan.Output(display_name="plan")],
        )

    @classmethod
    def fingerprint_inputs(cls, name):
        folder = plan_folder(name)
        index = folder / "plan.json"
        return index.stat().st_mtime_ns if index.exists() else name

    @classmethod
    def execute(cls, name) -> io.NodeOutput:
        folder = plan_folder(name)
        if not (folder / "plan.json").exists():
            raise ValueError(f"name: no plan in output/{name} (plan.json missing)")
        try:
            plan = load_plan(folder)
            embeddings = folder / EMBEDDINGS_FILE
            bank = PromptBank.load(embeddings) if embeddings.exists() else PromptBank()
        except (PlanFileError, ValueError) as err:
            raise ValueError(f"name: output/{name} is not a readable plan: {err}") from err
        return io.NodeOutput(PlanValue(plan, bank))
