"""Our Wan2.1 forward against ComfyUI's own WanModel, and ComfyUI's loader on our checkpoints.

ComfyUI runs in a subprocess (tests/comfy/parity_probe.py) so that this process never imports it.
"""
import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfy
PROBE = Path(__file__).with_name("parity_probe.py")
PYTHON = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"  # where setup_comfy.sh installs
TOLERANCE = 1e-5  # relative error, float32


@pytest.fixture(scope="module")
def probe(comfy_install, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("comfy_parity")
    out = work / "results.json"
    done = subprocess.run([str(PYTHON), str(PROBE), str(out), str(work)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads(out.read_text())


def test_forward_equals_comfyui_wanmodel_forward(probe):
    """Contiguous positions, full visibility: `wan_forward` over ComfyUI's module == ComfyUI's forward."""
    result = probe["direct"]
    assert result["shape"] == result["expected_shape"] == [2, 16, 5, 8, 8]
    assert result["rel_err"] <= TOLERANCE


@pytest.mark.parametrize("prefix", ["bare", "comfy"])
def test_load_diffusion_model_detects_our_checkpoint_as_wan21_t2v(probe, prefix):
    """A tiny model saved by `save_wan_safetensors` (bare keys or ``model.diffusion_model.``) loads in ComfyUI as
    Wan2.1 T2V with our shapes, and computes what our forward computes over our own module."""
    result = probe["loader"][prefix]
    assert (result["model_class"], result["model_config"], result["diffusion_model"], result["model_type"]) == (
        "WAN21", "WAN21_T2V", "WanModel", "t2v"
    )
    assert (result["dim"], result["num_heads"], result["num_layers"], result["dtype"]) == (128, 1, 2, "torch.float32")
    assert result["comfy_forward_rel_err"] <= TOLERANCE
    assert result["ours_over_comfy_rel_err"] <= TOLERANCE
