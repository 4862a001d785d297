"""The pack over ComfyUI's own loaders, and what a user sees on bad input: a tiny Wan2.1 from "Load Diffusion Model"
with MMPL weights patched in, wrong models and checkpoints, plans from another model, wrong image sizes, bad edits,
and an interrupted populate that resumes from what it left on disk."""
from __future__ import annotations

import copy
import io

import pytest
from client import PromptRejected
from demo_graphs import DEMO_TEXT, demo_chain
from models import TINY_I2V, TINY_LORA, TINY_MERGED, TINY_MMPL, TINY_MMPL_PT, TINY_T2V, WRONG_SHAPE
from PIL import Image

from mmpl_core.plan_store import load_plan

SEGMENT_EVENT = "mmpl.segment"  # the live populate status the nodes send (nodes/keyframe_ui.py)

pytestmark = pytest.mark.comfy

TEXT = {"class_type": "MMPL_DemoTextEncode", "inputs": {"text": DEMO_TEXT}}
NO_CHECKPOINT = "none (use the model as it is)"
SAMPLING = {"width": 32, "height": 32, "seed": 0, "steps": 2, "cfg": 1.0, "shift": 3.0, "sampler": "euler"}


def tiny_plan_prompt(checkpoint: str, unet: str = TINY_T2V, **sampling) -> dict:
    """Load Diffusion Model → MMPL Model (+ checkpoint) → Micro Planner → Keyframe Preview."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "MMPL_Model", "inputs": {"model": ["1", 0], "checkpoint": checkpoint, "layout": "mmpl-t2v-13"}},
        "3": TEXT, "4": {"class_type": "MMPL_DemoTextEncode", "inputs": {"text": ""}},
        "5": {"class_type": "MMPL_MicroPlanner", "inputs": {"mmpl_model": ["2", 0], "positive": ["3", 0],
                                                            "negative": ["4", 0], **SAMPLING, **sampling}},
        "6": {"class_type": "MMPL_DemoVAE", "inputs": {}},
        "7": {"class_type": "MMPL_KeyframePreview", "inputs": {"plan": ["5", 0], "vae": ["6", 0]}},
    }


def preview_bytes(server, result) -> bytes:
    """The keyframe images Keyframe Preview shows in its strip, one after the other."""
    keyframes = result.outputs["7"]["mmpl_keyframes"]
    assert keyframes
    return b"".join(server.client.view(kf["filename"], kf["subfolder"], kf["type"]) for kf in keyframes)


def error_of(result) -> str:
    assert result.error is not None, "expected the node to fail"
    return result.error["exception_message"]


def saved_plan_latents(server, name: str):
    plan = load_plan(server.base_dir / "output" / "mmpl" / name)
    return plan.segments[0].latents.latents[:, sorted(plan.segments[0].latents.known)]


@pytest.mark.parametrize("checkpoint", [TINY_MMPL, TINY_MMPL_PT])
def test_checkpoint_behind_a_lora_plans_like_merged_weights_through_the_server(comfy_server, checkpoint):
    """The user's graph, Load Diffusion Model → LoraLoaderModelOnly → MMPL Model (checkpoint), plans exactly like a
    model whose weights are the checkpoint behind the same LoRA; the LoRA changes the plan."""
    graphs = {"patched": (TINY_T2V, True, f"mmpl/{checkpoint}"), "merged": (TINY_MERGED, True, NO_CHECKPOINT),
              "merged_no_lora": (TINY_MERGED, False, NO_CHECKPOINT)}
    prompt = {"t": TEXT, "n": {"class_type": "MMPL_DemoTextEncode", "inputs": {"text": ""}}}
    for name, (unet, lora, ckpt) in graphs.items():
        prompt[f"{name}_unet"] = {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}}
        model = [f"{name}_unet", 0]
        if lora:
            prompt[f"{name}_lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
                "model": model, "lora_name": TINY_LORA, "strength_model": 1.0}}
            model = [f"{name}_lora", 0]
        prompt[f"{name}_mmpl"] = {"class_type": "MMPL_Model", "inputs": {"model": model, "checkpoint": ckpt,
                                                                          "layout": "mmpl-t2v-13"}}
        prompt[f"{name}_plan"] = {"class_type": "MMPL_MicroPlanner", "inputs": {
            "mmpl_model": [f"{name}_mmpl", 0], "positive": ["t", 0], "negative": ["n", 0], **SAMPLING}}
        prompt[f"{name}_save"] = {"class_type": "MMPL_SavePlan", "inputs": {"plan": [f"{name}_plan", 0],
                                                                            "name": f"mmpl/weights_{name}"}}
    result = comfy_server.client.run(prompt)
    assert result.error is None, result.error
    got, want, no_lora = (saved_plan_latents(comfy_server, f"weights_{n}") for n in graphs)
    assert ((got - want).norm() / want.norm()).item() <= 1e-4
    assert ((no_lora - want).norm() / want.norm()).item() > 0.02


def test_bad_models_and_checkpoints_fail_on_the_node_naming_the_input(comfy_server):
    wrong = comfy_server.client.run(tiny_plan_prompt(f"mmpl/{WRONG_SHAPE}", seed=1))
    assert error_of(wrong).startswith("checkpoint:") and "does not fit" in error_of(wrong)
    assert wrong.error["node_type"] == "MMPL_Model"
    i2v = comfy_server.client.run(tiny_plan_prompt("none (use the model as it is)", unet=TINY_I2V))
    assert error_of(i2v).startswith("model:") and "image-to-video" in error_of(i2v)
    ok = comfy_server.client.run(tiny_plan_prompt("none (use the model as it is)", seed=2))
    assert ok.error is None  # the server keeps serving


def test_validation_errors_name_the_input(comfy_server):
    prompt = tiny_plan_prompt("none (use the model as it is)", steps=0)
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.client.queue(prompt)
    [error] = rejected.value.node_errors["5"]["errors"]
    assert error["type"] == "value_smaller_than_min" and error["extra_info"]["input_name"] == "steps"


def with_output(prompt: dict, plan: list) -> dict:
    """ComfyUI only runs prompts with an output node: save the plan of node `plan`."""
    return {**prompt, "99": {"class_type": "MMPL_SavePlan", "inputs": {"plan": plan, "name": "mmpl/scratch"}}}


def test_plan_of_another_model_wrong_image_and_bad_edits_are_refused(comfy_server):
    saved = demo_chain(2, seed=11)
    saved["7"] = {"class_type": "MMPL_SavePlan", "inputs": {"plan": ["6", 0], "name": "mmpl/other_model"}}
    assert comfy_server.client.run(saved).error is None

    other = tiny_plan_prompt("none (use the model as it is)")
    other["8"] = {"class_type": "MMPL_LoadPlan", "inputs": {"name": "mmpl/other_model"}}
    other["9"] = {"class_type": "MMPL_ContentPopulator", "inputs": {"mmpl_model": ["2", 0], "plan": ["8", 0], "segments": "all"}}
    del other["7"]
    message = error_of(comfy_server.client.run(with_output(other, ["9", 0])))
    assert message.startswith("plan:") and "another model" in message

    missing = {"1": {"class_type": "MMPL_LoadPlan", "inputs": {"name": "mmpl/never_saved"}}}
    assert "no plan in output/mmpl/never_saved" in error_of(comfy_server.client.run(with_output(missing, ["1", 0])))

    i2v = demo_chain(1, seed=12)
    Image.new("RGB", (48, 48), (200, 0, 0)).save(comfy_server.base_dir / "input" / "mmpl_wrong_size.png")
    i2v["1"]["inputs"]["layout"] = "mmpl-i2v-13"
    i2v["7"] = {"class_type": "LoadImage", "inputs": {"image": "mmpl_wrong_size.png"}}
    i2v["6"]["inputs"]["image"] = ["7", 0]
    message = error_of(comfy_server.client.run(with_output(i2v, ["6", 0])))
    assert message.startswith("image:") and "64x64" in message and "48x48" in message

    edits = demo_chain(1, seed=13)
    edits["7"] = {"class_type": "MMPL_KeyframeEditor", "inputs": {"plan": ["6", 0], "edits": '[{"op": "lock", "segment": 4}]'}}
    message = error_of(comfy_server.client.run(with_output(edits, ["7", 0])))
    assert message.startswith("edits:") and "segments 0..0" in message
    edits["7"]["inputs"].update(vae=["2", 0], edits='[{"op": "replace", "segment": 0, "frame": 2, "image": "../server.log"}]')
    message = error_of(comfy_server.client.run(with_output(edits, ["7", 0])))
    assert message.startswith("edits:") and "'../server.log' is not in ComfyUI's input folder" in message

    bridged = demo_chain(2, seed=14)  # segment 2's first latents are the bridge's: an edit there would be overwritten
    Image.new("RGB", (64, 64), (200, 0, 0)).save(comfy_server.base_dir / "input" / "mmpl_red.png")
    bridged["7"] = {"class_type": "MMPL_KeyframeEditor", "inputs": {"plan": ["6", 0], "vae": ["2", 0], "edits": (
        '[{"op": "replace", "segment": 1, "frame": 0, "image": "mmpl_red.png"}]')}}
    message = error_of(comfy_server.client.run(with_output(bridged, ["7", 0])))
    assert message.startswith("edits:") and "frame 0 of segment 1 is one of the 2 latents the VAE bridge" in message


def test_interrupted_populate_keeps_finished_segments_and_resumes(comfy_server):
    prompt = demo_chain(4, seed=21, steps=6)
    prompt["7"] = {"class_type": "MMPL_ContentPopulator", "inputs": {"mmpl_model": ["1", 0], "plan": ["6", 0], "segments": "all"}}
    prompt = with_output(prompt, ["7", 0])
    per_segment = 2 * 6  # two populate groups (head, tail) of the demo layout, 6 steps each

    def interrupt_after_first_segment(message):  # the scheduler may start any segment first
        data = message.get("data", {})
        if message["type"] == SEGMENT_EVENT and data.get("node") == "7" and data["status"] == "done":
            comfy_server.client.interrupt()

    first = comfy_server.client.run(prompt, on_message=interrupt_after_first_segment)
    assert "execution_interrupted" in first.message_types
    caches = [load_plan(p.parent) for p in (comfy_server.base_dir / "output" / "mmpl" / "cache").glob("*/plan.json")]
    # Macro Chain keeps its planned chain in a cache of its own; the populator's holds the populated segments
    [kept] = [plan.statuses() for plan in caches if plan.settings.seed == 21 and "populated" in plan.statuses()]
    assert 1 <= kept.count("populated") < 4

    second = comfy_server.client.run(copy.deepcopy(prompt))
    assert second.error is None
    maxima = {m["data"]["max"] for m in second.messages if m["type"] == "progress" and m["data"]["node"] == "7"}
    assert maxima == {per_segment * (4 - kept.count("populated"))}  # only the unfinished segments run again


@pytest.mark.parametrize("kv_cache", ["auto", "cpu"])
def test_model_management_is_told_what_sampling_needs_beyond_the_weights(comfy_server, kv_cache):
    """Before sampling, MMPL passes model management the estimator's bytes beyond the weights (KV cache in its
    placement, text K/V, the largest chunk's activations), so ComfyUI offloads weights to make room."""
    from mmpl_core.layout import get_layout
    from mmpl_core.memory import device_bytes_beyond_weights
    from mmpl_core.model import WAN_CONFIGS

    prompt = tiny_plan_prompt(NO_CHECKPOINT, seed=50 + len(kv_cache), width=48, height=32)
    prompt["2"]["inputs"]["kv_cache"] = kv_cache
    before = len(comfy_server.log())
    assert comfy_server.client.run(prompt).error is None
    placement = "device" if kv_cache == "auto" else "cpu"  # a CPU device always fits: auto keeps it there
    line = f"MMPL plan at 48x32: KV cache on {placement}; "
    [logged] = [entry for entry in comfy_server.log()[before:].splitlines() if line in entry]
    reserved = int(logged.split(line)[1].split()[0])
    expected = device_bytes_beyond_weights(WAN_CONFIGS["tiny"], get_layout("mmpl-t2v-13"), 32, 48, role="plan",
                                           guidance=SAMPLING["cfg"], kv_cache=placement, nbytes=4)
    assert reserved == expected > 0
