"""The embedded demo decodes the same in ComfyUI (MMPL Demo VAE) as in the `mmpl` command: one plan, decoded by
Decode Video in the server and by the command's pipeline, gives the same frames (to the last 8-bit step)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from demo_graphs import demo_chain

from mmpl_core.demo import load_demo_pipeline
from mmpl_core.plan_store import load_plan
from mmpl_core.video_io import to_uint8_frames

pytestmark = pytest.mark.comfy


def test_demo_vae_decodes_like_the_command_line(comfy_server):
    prompt = demo_chain(2, seed=41)
    prompt["7"] = {"class_type": "MMPL_ContentPopulator", "inputs": {"mmpl_model": ["1", 0], "plan": ["6", 0],
                                                                     "segments": "all"}}
    prompt["8"] = {"class_type": "MMPL_SavePlan", "inputs": {"plan": ["7", 0], "name": "mmpl/codec_plan"}}
    prompt["9"] = {"class_type": "MMPL_DecodeVideo", "inputs": {"plan": ["8", 0], "vae": ["2", 0]}}
    prompt["10"] = {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "mmpl/codec_frames"}}
    result = comfy_server.client.run(prompt)
    assert result.error is None, result.error
    comfy_frames = np.stack([
        np.asarray(Image.open(comfy_server.base_dir / "output" / image["subfolder"] / image["filename"]).convert("RGB"))
        for image in result.outputs["10"]["images"]
    ])
    pipe, _ = load_demo_pipeline()
    ours = to_uint8_frames(pipe.decode(load_plan(comfy_server.base_dir / "output" / "mmpl" / "codec_plan")))
    assert comfy_frames.shape == ours.shape == (49 + 44, 64, 64, 3)
    assert np.abs(comfy_frames.astype(int) - ours.astype(int)).max() <= 1
