"""ComfyUI's two workflow formats: the UI ("save") format of example_workflows/ and the API format POST /prompt runs.

Both directions use the server's /object_info to know which inputs are widgets and in which order the frontend
stores their values (`widgets_values`), including the extra values some widgets add (a seed's "control after
generate", LoadImage's upload button).
"""
from __future__ import annotations

from collections import defaultdict

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
HF = "https://huggingface.co"
WAN_REPACKAGED = f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
# Where each model file of the real-model templates comes from: name → (url, models/ folder). The frontend offers
# these downloads (node properties.models, as ComfyUI's own templates carry them) when a file is missing.
MODEL_DOWNLOADS = {
    "wan2.1_t2v_14B_fp8_e4m3fn.safetensors": (f"{WAN_REPACKAGED}/diffusion_models/wan2.1_t2v_14B_fp8_e4m3fn.safetensors",
                                              "diffusion_models"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (f"{WAN_REPACKAGED}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                               "text_encoders"),
    "wan_2.1_vae.safetensors": (f"{WAN_REPACKAGED}/vae/wan_2.1_vae.safetensors", "vae"),
    "t2v_14B_8k.pt": (f"{HF}/Tele-AI/MMPL/resolve/main/t2v_14B_8k.pt", "mmpl"),
    "i2v_14B_6k.pt": (f"{HF}/Tele-AI/MMPL/resolve/main/i2v_14B_6k.pt", "mmpl"),
    "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors": (
        f"{HF}/Kijai/WanVideo_comfy/resolve/main/Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors", "loras"),
}
NODE_SIZE, STRIP_WIDTH, GAP, TITLE = (320, 260), 560, 40, 30  # a node's title bar lies above its pos
# Nodes that show a keyframe strip (web/js/): the height of their other widgets; the strip adds a row per segment.
STRIP_NODES = {"MMPL_MacroChain": 380, "MMPL_MicroPlanner": 380, "MMPL_KeyframePreview": 60, "MMPL_KeyframeEditor": 180}


def ordered_inputs(info: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, optional) of a node's inputs in the frontend's order."""
    inputs, order = info["input"], info.get("input_order", {})
    result = []
    for group in ("required", "optional"):
        specs = inputs.get(group, {})
        for name in order.get(group, list(specs)):
            result.append((name, specs[name], group == "optional"))
    return result


def is_widget(spec: list) -> bool:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def widget_default(spec: list):
    """A widget's default: its "default" option, else a combo's first choice (what the frontend shows)."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    return spec[0][0] if isinstance(spec[0], list) and spec[0] else None


def with_defaults(prompt: dict, object_info: dict) -> dict:
    """An API prompt with every widget input it leaves out set to its default, as the node then runs it (so a
    prompt written before an optional widget existed compares equal to one that shows it)."""
    out = {}
    for nid, node in prompt.items():
        inputs = dict(node["inputs"])
        for name, spec, _ in ordered_inputs(object_info[node["class_type"]]):
            if is_widget(spec) and name not in inputs:
                inputs[name] = widget_default(spec)
        out[nid] = {**node, "inputs": inputs}
    return out


def extra_widget_values(spec: list) -> list:
    """Values the frontend stores after a widget's own value."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("control_after_generate"):
        return ["fixed"]
    if options.get("image_upload"):
        return ["image"]
    return []


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """A UI-format workflow → the API-format prompt the frontend would queue for it."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        info = object_info[node["type"]]
        inputs, values = {}, list(node.get("widgets_values") or [])
        linked = {i["name"]: i.get("link") for i in node.get("inputs", [])}
        for name, spec, _ in ordered_inputs(info):
            if linked.get(name) is not None:
                link = links[linked[name]]
                inputs[name] = [str(link[1]), link[2]]
            if is_widget(spec):
                value = values.pop(0)
                del values[: len(extra_widget_values(spec))]
                if name not in inputs:
                    inputs[name] = value
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title", info["display_name"])}}
    return prompt


def _depths(prompt: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(nid: str) -> int:
        if nid not in depth:
            sources = [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list)]
            depth[nid] = 1 + max((visit(s) for s in sources), default=-1)
        return depth[nid]

    for nid in prompt:
        visit(nid)
    return depth


def model_downloads(widgets: list) -> list[dict]:
    """properties.models of a node whose widgets name model files of MODEL_DOWNLOADS (a folder prefix such as
    "mmpl/" is the combo's, not the file's)."""
    found = []
    for value in widgets:
        name = value.rpartition("/")[2] if isinstance(value, str) else None
        if name in MODEL_DOWNLOADS:
            url, directory = MODEL_DOWNLOADS[name]
            found.append({"name": name, "url": url, "directory": directory})
    return found


def node_size(class_type: str, segments: int) -> tuple[int, int]:
    """Room for a node's widgets, and for its keyframe strip once it ran (the browser grows it if it needs more)."""
    if class_type not in STRIP_NODES:
        return NODE_SIZE
    return STRIP_WIDTH, STRIP_NODES[class_type] + 70 + 100 * (1 if class_type == "MMPL_MicroPlanner" else segments)


def api_to_ui(prompt: dict, object_info: dict) -> dict:
    """An API-format prompt → a UI-format workflow laid out in columns by graph depth, sized so that nodes do not
    overlap once their keyframe strips are shown."""
    depth = _depths(prompt)
    segments = max([v["inputs"]["segments"] for v in prompt.values() if v["class_type"] == "MMPL_MacroChain"] or [1])
    sizes = {nid: node_size(node["class_type"], segments) for nid, node in prompt.items()}
    widths = defaultdict(int)
    for nid, size in sizes.items():
        widths[depth[nid]] = max(widths[depth[nid]], size[0])
    column_x = {c: 40 + sum(widths[d] + GAP for d in range(c)) for c in widths}
    column_y = defaultdict(lambda: 40)
    nodes, links, out_links = [], [], defaultdict(list)
    for nid, node in prompt.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                link_id = len(links) + 1
                kind = object_info[prompt[value[0]]["class_type"]]["output"][value[1]]
                links.append([link_id, int(value[0]), value[1], int(nid), name, kind])
                out_links[(value[0], value[1])].append(link_id)
    for order, (nid, node) in enumerate(sorted(prompt.items(), key=lambda kv: (depth[kv[0]], int(kv[0])))):
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, spec, optional in ordered_inputs(info):
            value = node["inputs"].get(name, widget_default(spec))
            link = next((lk[0] for lk in links if lk[3] == int(nid) and lk[4] == name), None)
            if is_widget(spec):
                widgets += [value if link is None else widget_default(spec)] + extra_widget_values(spec)
                if link is not None:
                    inputs.append({"name": name, "type": spec[0], "widget": {"name": name}, "link": link})
            elif link is not None or not optional:
                inputs.append({"name": name, "type": spec[0], "link": link})
        outputs = [{"name": out_name, "type": kind, "links": out_links.get((nid, slot), [])}
                   for slot, (kind, out_name) in enumerate(zip(info["output"], info["output_name"]))]
        column, size = depth[nid], sizes[nid]
        y, column_y[column] = column_y[column], column_y[column] + size[1] + GAP + TITLE
        properties = {"cnr_id": "mmpl-long-video"} if node["class_type"].startswith("MMPL_") else {}
        properties["Node name for S&R"] = node["class_type"]
        if model_downloads(widgets):
            properties["models"] = model_downloads(widgets)
        nodes.append({
            "id": int(nid), "type": node["class_type"], "title": node.get("_meta", {}).get("title", info["display_name"]),
            "pos": [column_x[column], y], "size": list(size), "flags": {}, "order": order, "mode": 0,
            "inputs": inputs, "outputs": outputs, "properties": properties, "widgets_values": widgets,
        })
    for link in links:  # UI links name the target slot by index
        target = next(n for n in nodes if n["id"] == link[3])
        link[4] = next(i for i, spec in enumerate(target["inputs"]) if spec["name"] == link[4])
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}
