"""The pack inside a real ComfyUI: every node listed, every example workflow run through POST /prompt and the
websocket, outputs checked, UI-format examples in sync with their API-format twins.

MMPL_REGENERATE_WORKFLOWS=1 rewrites example_workflows/*.json (from the API twins) and their .jpg thumbnails (from
the outputs of the run) instead of checking them.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from join_checks import check_joins, check_saved_targets, loops
from workflow_format import MODEL_DOWNLOADS, api_to_ui, ui_to_api, with_defaults

from mmpl_core.keyframes import contact_sheet
from mmpl_core.layout import get_layout
from mmpl_core.stitch import stitched_frame_count

REPO = Path(__file__).resolve().parents[2]
TWINS = sorted((Path(__file__).parent / "workflows").glob("*_api.json"))
EXAMPLES = REPO / "example_workflows"
REGENERATE = os.environ.get("MMPL_REGENERATE_WORKFLOWS") == "1"
# Inputs that differ on purpose between an example and its twin (the example targets a GPU box, CI has a CPU).
MACHINE_SPECIFIC = {("MMPL_MultiGPUScheduler", "devices"): "cuda:0,cuda:1"}
NODE_IDS = {
    "MMPL_Model", "MMPL_DemoVAE", "MMPL_DemoTextEncode", "MMPL_SegmentPrompts", "MMPL_MicroPlanner", "MMPL_MacroChain",
    "MMPL_VAEBridge", "MMPL_MultiGPUScheduler", "MMPL_ContentPopulator", "MMPL_DecodeVideo", "MMPL_KeyframePreview",
    "MMPL_KeyframeEditor", "MMPL_SavePlan", "MMPL_LoadPlan",
}

STRIP_NODES = {"MMPL_MicroPlanner", "MMPL_MacroChain", "MMPL_KeyframePreview", "MMPL_KeyframeEditor"}
REAL_MODEL = "mmpl_wan14b_"  # templates over the real Wan2.1-T2V-14B files; their twins run on tiny stand-ins
STAND_IN_SIZE, STAND_IN_STEPS = 64, 4  # the tiny stand-ins run the templates at 64×64, with at most 4 steps

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.client.object_info()


@pytest.fixture(scope="module")
def first_frame(comfy_server):
    """The I2V example's input image, in the server's input folder: a red disc on blue."""
    y, x = np.mgrid[:64, :64]
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 2] = 160
    image[(y - 32) ** 2 + (x - 24) ** 2 < 100] = (220, 30, 30)
    path = comfy_server.base_dir / "input" / "mmpl_first_frame.png"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_node_is_listed_with_category_and_tooltips(object_info):
    ours = {name: info for name, info in object_info.items() if name.startswith("MMPL_")}
    assert set(ours) == NODE_IDS
    for name, info in ours.items():
        assert info["category"] == "MMPL Long Video" and info["description"], name


def test_example_workflows_match_their_api_twins(object_info):
    names = {p.name.removesuffix("_api.json") for p in TWINS}
    assert names and names == {p.stem for p in EXAMPLES.glob("*.json")} or REGENERATE
    for twin in TWINS:
        name = twin.name.removesuffix("_api.json")
        prompt = load(twin)
        ui = api_to_ui(prompt, object_info)
        for node in ui["nodes"]:  # the shipped example targets a GPU box
            for (cls, field), value in MACHINE_SPECIFIC.items():
                if node["type"] == cls:
                    node["widgets_values"][0] = value
        if REGENERATE:
            (EXAMPLES / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        example = load(EXAMPLES / f"{name}.json")
        converted = ui_to_api(example, object_info)
        for node in converted.values():
            for (cls, field), _ in MACHINE_SPECIFIC.items():
                if node["class_type"] == cls:
                    node["inputs"][field] = prompt[next(k for k, v in prompt.items() if v["class_type"] == cls)]["inputs"][field]
        strip = lambda p: {k: {"class_type": v["class_type"], "inputs": v["inputs"]}  # noqa: E731
                           for k, v in with_defaults(p, object_info).items()}
        assert strip(converted) == strip(prompt), name
        assert REGENERATE or (EXAMPLES / f"{name}.jpg").exists(), f"{name}.jpg thumbnail missing"


def _segments(prompt: dict) -> tuple[int, str]:
    chain = next(v for v in prompt.values() if v["class_type"] == "MMPL_MacroChain")
    model = next(v for v in prompt.values() if v["class_type"] == "MMPL_Model")
    layout = model["inputs"]["layout"]
    if layout == "auto":  # the demo's own layout, or Wan's for a Wan model with an MMPL checkpoint
        layout = "mmpl-t2v-13" if model["inputs"]["checkpoint"].startswith("demo") else "wan-t2v"
    return chain["inputs"]["segments"], layout


def test_real_model_templates_carry_download_notes(object_info):
    """Every model file a real-model template loads comes with its download (name, url, models/ folder), as in
    ComfyUI's own templates, so the frontend can offer the missing ones."""
    real = [t for t in TWINS if t.name.startswith(REAL_MODEL)]
    assert len(real) == 3
    for twin in real:
        example = load(EXAMPLES / twin.name.replace("_api.json", ".json"))
        notes = {m["name"]: m for n in example["nodes"] for m in n.get("properties", {}).get("models", [])}
        files = {v.rpartition("/")[2] for n in example["nodes"] for v in n["widgets_values"] if isinstance(v, str)}
        assert files & set(MODEL_DOWNLOADS) == set(notes), twin.name
        for name, note in notes.items():
            assert (note["url"], note["directory"]) == MODEL_DOWNLOADS[name] and note["url"].endswith("/" + name)


def cpu_stand_in(prompt: dict) -> dict:
    """A real-model template as the tests run it on the tiny stand-ins (tests/comfy/models.py): the text as a
    CONDITIONING of the right width (umT5-XXL has no tiny stand-in, so CLIP Loader + CLIP Text Encode become MMPL
    Demo Text Encode), at 64×64 and with at most 4 steps (CI time); everything else — files, layout, segments, CFG,
    sampler, nodes — as in the template."""
    out = {}
    for nid, node in prompt.items():
        node = json.loads(json.dumps(node))
        if node["class_type"] == "CLIPLoader":
            continue
        if node["class_type"] == "CLIPTextEncode":
            node = {"class_type": "MMPL_DemoTextEncode", "inputs": {"text": node["inputs"]["text"]}}
        if node["class_type"] in ("MMPL_MacroChain", "ImageScale"):
            node["inputs"].update(width=STAND_IN_SIZE, height=STAND_IN_SIZE)
        if "steps" in node["inputs"]:
            node["inputs"]["steps"] = min(node["inputs"]["steps"], STAND_IN_STEPS)
        out[nid] = node
    return out


def video_frames(client, output: dict) -> tuple[int, tuple[int, int]]:
    """Frame count and size of the mp4 a Save Video node wrote."""
    import av

    [saved] = output["images"]
    data = client.view(saved["filename"], saved["subfolder"], saved["type"])
    assert saved["filename"].endswith(".mp4")
    with av.open(io.BytesIO(data)) as container:
        frames = [f for f in container.decode(video=0)]
    return len(frames), (frames[0].width, frames[0].height)


@pytest.mark.parametrize("twin", TWINS, ids=lambda p: p.name.removesuffix("_api.json"))
def test_example_workflow_runs(comfy_server, first_frame, twin):
    prompt = load(twin)
    if twin.name.startswith(REAL_MODEL):
        prompt = cpu_stand_in(prompt)
    result = comfy_server.client.run(prompt, timeout=600)
    assert result.error is None, result.error
    assert result.status.get("status_str") == "success"
    progress_nodes = {m["data"]["node"] for m in result.messages if m["type"] == "progress"}
    mmpl_sampling = {k for k, v in prompt.items() if v["class_type"] in ("MMPL_MacroChain", "MMPL_ContentPopulator")}
    assert mmpl_sampling <= progress_nodes, "every sampling node reports progress"
    print(f"{twin.name}: {result.seconds:.1f} s")

    segments, layout = _segments(prompt)
    expected = stitched_frame_count(get_layout(layout), segments, loop=loops(prompt))
    frames = None
    for save in (k for k, v in prompt.items() if v["class_type"] in ("SaveAnimatedWEBP", "SaveVideo")):
        if prompt[save]["class_type"] == "SaveVideo":  # an mp4 through ComfyUI's own video nodes
            assert video_frames(comfy_server.client, result.outputs[save]) == (expected, (64, 64))
            continue
        [video] = result.outputs[save]["images"]
        frames = Image.open(io.BytesIO(comfy_server.client.view(video["filename"], video["subfolder"], video["type"])))
        assert webp_frame_count(frames, prompt[save]["inputs"]["fps"]) == expected and frames.size == (64, 64)
    assert any(v["class_type"] in ("SaveAnimatedWEBP", "SaveVideo") for v in prompt.values())

    strips = [k for k, v in prompt.items() if v["class_type"] in STRIP_NODES]
    assert strips and all(k in result.outputs for k in strips), "every planner, preview and editor shows a strip"
    for node in strips:
        check_strip(result.outputs[node], segments, get_layout(layout))
    check_joins(prompt, result.outputs, segments)
    check_saved_targets(prompt, comfy_server.base_dir / "output", get_layout(layout))
    if REGENERATE and not twin.name.startswith(REAL_MODEL):  # real-model thumbnails show the graph (browser test)
        preview = [k for k, v in prompt.items() if v["class_type"] == "MMPL_KeyframePreview"]
        if preview:
            thumb = Image.fromarray(strip_sheet(comfy_server.client, result.outputs[preview[-1]], get_layout(layout)))
        else:
            frames.seek(frames.n_frames // 2)
            thumb = frames.convert("RGB").resize((256, 256), Image.NEAREST)
        thumb.thumbnail((512, 512))
        thumb.save(EXAMPLES / f"{twin.name.removesuffix('_api.json')}.jpg", quality=90)


def webp_frame_count(webp: Image.Image, fps: float) -> int:
    """Frames of an animated WEBP at `fps`, counted by duration: libwebp stores identical consecutive frames (a
    still stretch of video) as one longer frame."""
    frame_ms = int(1000.0 / fps)  # SaveAnimatedWEBP's per-frame duration
    total = 0
    for index in range(webp.n_frames):
        webp.seek(index)
        webp.load()  # Pillow reads a frame's duration as it decodes it
        total += webp.info["duration"]
    assert total % frame_ms == 0, (total, frame_ms)
    return total // frame_ms


def check_strip(ui: dict, segments: int, layout) -> None:
    """The `ui` a strip node sends (nodes/keyframe_ui.py): every keyframe of every segment, labelled."""
    [plan] = ui["mmpl_plan"]
    assert plan["segments"] == len(ui["mmpl_segments"]) and plan["frames"] == list(layout.keyframes)
    assert plan["roles"][0] == "initial" and plan["roles"][-1] == "terminal" and not plan["approximate"]
    planned = [s["segment"] for s in ui["mmpl_segments"] if s["status"] in ("planned", "populated")]
    assert planned == list(range(plan["segments"])) and plan["segments"] in (1, segments)
    keyframes = ui["mmpl_keyframes"]
    assert [(kf["segment"], kf["frame"]) for kf in keyframes] == [(k, f) for k in planned for f in layout.keyframes]
    assert all(kf["type"] == "temp" and kf["filename"].endswith(".png") and kf["time"] >= 0 for kf in keyframes)


def strip_sheet(client, ui: dict, layout):
    """The labelled contact sheet (as Keyframe Preview's output) of a strip's full-size keyframe images."""
    rows = {}
    for kf in ui["mmpl_keyframes"]:
        image = np.array(Image.open(io.BytesIO(client.view(kf["filename"], kf["subfolder"], kf["type"]))).convert("RGB"))
        rows.setdefault(kf["segment"], []).append(torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1)
    return contact_sheet([torch.stack(r) for r in rows.values()], layout, ui["mmpl_plan"][0]["fps"], layout.keyframes)
