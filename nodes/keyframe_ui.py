"""What the browser extension (web/js/) shows on a node: a plan's keyframes as a strip, and populate progress.

A node that shows a strip returns `ui=strip_ui(...)`; the `executed` message then carries three lists:

- ``mmpl_plan``: one entry: the plan's id (`plan_identity`), size, layout, keyframe frames and roles, fps;
- ``mmpl_segments``: one entry per segment: status, locked, seed, prompt (plain-text prompts only), changed
  (True/False against the plan it was edited or re-planned from; None when there is none);
- ``mmpl_keyframes``: one entry per keyframe of every planned segment: segment, frame, role, time in seconds and
  the image files (in ComfyUI's temp folder, served by /view): ``filename`` at the video's size, ``thumb`` at most
  THUMB_SIZE pixels on its long side.

The browser keeps the last `ui` in the node's properties (saved with the workflow) and shows it again after a reload;
``POST /mmpl/keyframes/missing`` tells it which of those image files ComfyUI no longer has (`register_routes`).

Image files are named by a hash of what they show (the segment's keyframe latents), so a plan shown by several nodes,
or a segment that a re-plan left as it was, is decoded once and keeps its file name. While populating, the Content
Populator sends ``mmpl.segment`` messages ({node, plan, segments, segment, status, worker}) with `SegmentProgress`;
the browser updates every strip that shows the plan with that id.
"""
from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import torch
from PIL import Image
import folder_paths

from mmpl_core.keyframes import decode_keyframes, keyframe_roles, to_uint8_image
from mmpl_core.plan import Plan
from mmpl_core.populate import plan_identity
from mmpl_core.prompt_bank import LABEL_PREFIX
from mmpl_core.stitch import keyframe_time

from .comfy_adapters import WAN21_LATENT
from .types import PlanValue

SUBFOLDER = "mmpl"
THUMB_SIZE = 192
SEGMENT_EVENT = "mmpl.segment"
log = logging.getLogger(__name__)


def _segment_key(plan: Plan, k: int, approximate: bool) -> str:
    """A name for what segment k's keyframe images show: its keyframe latents (and how they are decoded)."""
    latents, frames = plan.segments[k].latents, list(plan.layout.keyframes)
    digest = hashlib.sha256(f"{plan.layout.name}|{plan.settings.width}x{plan.settings.height}|{approximate}".encode())
    digest.update(latents.latents[:, frames].float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def approximate_keyframes(latents: torch.Tensor, frames, size: tuple[int, int]) -> torch.Tensor:
    """Keyframe previews without a VAE [K, 3, H, W] in [-1, 1]: ComfyUI's linear latent → RGB map for Wan2.1 (the
    one its sampler previews use), upscaled to the video size. Rough colours only; meant for real Wan latents."""
    raw = WAN21_LATENT.process_out(latents[None, :, list(frames)].float())[0]  # [C, K, h, w]
    factors = torch.tensor(WAN21_LATENT.latent_rgb_factors, dtype=torch.float32)  # [C, 3]
    bias = torch.tensor(WAN21_LATENT.latent_rgb_factors_bias, dtype=torch.float32)
    rgb = torch.einsum("ckhw,cr->krhw", raw, factors) + bias[None, :, None, None]
    return torch.nn.functional.interpolate(rgb, size=size, mode="bilinear", align_corners=False).clamp(-1, 1)


def _save(image: np.ndarray, name: str, folder: str) -> None:
    """Write a PNG atomically (another node may be reading the same name)."""
    path = os.path.join(folder, name)
    partial = f"{path}.{os.getpid()}.partial"
    Image.fromarray(image).save(partial, format="PNG", compress_level=4)
    os.replace(partial, path)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    picture = Image.fromarray(image)
    picture.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.BILINEAR)
    return np.asarray(picture)


def keyframe_files(plan: Plan, vae=None, decoded: dict | None = None) -> dict[tuple[int, int], tuple[str, str]]:
    """(segment, frame) → (image file, thumbnail file) under temp/mmpl, for every planned segment; decoded with
    `vae` (a ComfyWanVAE) or, without one, approximated from the latents. decoded: segment → keyframe images
    [K, 3, H, W] the caller already has."""
    folder = os.path.join(folder_paths.get_temp_directory(), SUBFOLDER)
    os.makedirs(folder, exist_ok=True)
    frames, files = plan.layout.keyframes, {}
    size = (plan.settings.height, plan.settings.width)
    for k, seg in enumerate(plan.segments):
        if seg.latents is None or not seg.latents.known >= frozenset(frames):
            continue
        key = _segment_key(plan, k, approximate=vae is None)
        names = {f: (f"kf_{key}_f{f}.png", f"kf_{key}_f{f}_thumb.png") for f in frames}
        if not all(os.path.exists(os.path.join(folder, n)) for pair in names.values() for n in pair):
            if decoded is not None and k in decoded:
                images = decoded[k]
            elif vae is not None:
                images = decode_keyframes(vae, seg.latents, frames)
            else:
                images = approximate_keyframes(seg.latents.latents, frames, size)
            for frame, image in zip(frames, images):
                full = to_uint8_image(image)
                _save(full, names[frame][0], folder)
                _save(_thumbnail(full), names[frame][1], folder)
        files.update({(k, f): pair for f, pair in names.items()})
    return files


def strip_ui(value: PlanValue, vae=None, changed=None, decoded: dict | None = None) -> dict:
    """The `ui` dict of a node that shows `value`'s plan as a keyframe strip (see the module docstring).

    changed: segments that differ from the plan this one was edited or re-planned from (default: value.changed).
    """
    plan = value.plan
    changed = value.changed if changed is None else changed
    roles, fps = keyframe_roles(plan.layout), plan.settings.fps
    files = keyframe_files(plan, vae, decoded)
    segments = [{
        "segment": k, "status": seg.status(plan.layout), "locked": seg.locked, "seed": seg.seed,
        "prompt": "" if seg.prompt.startswith(LABEL_PREFIX) else seg.prompt,
        "changed": None if changed is None else k in changed,
    } for k, seg in enumerate(plan.segments)]
    keyframes = [{
        "segment": k, "frame": f, "role": roles[f], "time": round(keyframe_time(plan.layout, k, f, fps, plan.settings.handoff), 3),
        "filename": full, "thumb": thumb, "subfolder": SUBFOLDER, "type": "temp",
    } for (k, f), (full, thumb) in sorted(files.items())]
    summary = {
        "id": plan_identity(plan), "segments": len(plan), "layout": plan.layout.name, "fps": fps,
        "width": plan.settings.width, "height": plan.settings.height, "frames": list(plan.layout.keyframes),
        "roles": [roles[f] for f in plan.layout.keyframes], "approximate": vae is None,
    }
    return {"mmpl_plan": [summary], "mmpl_segments": segments, "mmpl_keyframes": keyframes}


def missing_files(names: list[str]) -> list[str]:
    """The keyframe image files among `names` that temp/mmpl does not hold (any name with a folder in it counts as
    missing: only plain file names of that folder are looked up)."""
    folder = os.path.join(folder_paths.get_temp_directory(), SUBFOLDER)
    def present(name: str) -> bool:
        plain = os.path.basename(name) == name and name not in ("", ".", "..")
        return plain and os.path.isfile(os.path.join(folder, name))

    return [name for name in names if not present(name)]


def register_routes() -> None:
    """Add ``POST /mmpl/keyframes/missing`` ({"files": [name, ...]} → {"missing": [...]}) to the running server
    (ComfyUI empties its temp folder when it starts, so a strip saved with a workflow may point at files that are
    gone). Nothing happens outside a server or on a second call."""
    from aiohttp import web
    from server import PromptServer

    server = getattr(PromptServer, "instance", None)
    if server is None or getattr(server, "_mmpl_routes", False):
        return
    server._mmpl_routes = True

    @server.routes.post("/mmpl/keyframes/missing")
    async def keyframes_missing(request):
        try:
            body = await request.json()
        except ValueError:
            body = None
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files) or len(files) > 100_000:
            return web.json_response({"error": 'expected {"files": [file name, ...]}'}, status=400)
        return web.json_response({"missing": missing_files(files)})


def send_to_browser(event: str, data: dict) -> None:
    """A message to the browser that queued the running prompt (nothing outside a running server)."""
    from server import PromptServer

    server = getattr(PromptServer, "instance", None)
    if server is not None:
        server.send_sync(event, data, server.client_id)


class SegmentProgress:
    """Tells the browser how populating goes, segment by segment: planned → populating (on which worker) → done.
    Thread-safe (PromptServer.send_sync queues onto the server's event loop)."""

    def __init__(self, plan: Plan, node_id: str | None):
        self.node, self.plan_id, self.segments = node_id, plan_identity(plan), len(plan)

    def send(self, segment: int, status: str, worker: str = "") -> None:
        if self.node is None:
            return
        data = {"node": self.node, "plan": self.plan_id, "segments": self.segments, "segment": segment,
                "status": status, "worker": worker}
        try:
            send_to_browser(SEGMENT_EVENT, data)
        except Exception as err:  # noqa: BLE001 — progress display must never fail the populate
            log.warning("mmpl: could not send %s: %s", SEGMENT_EVENT, err)
