"""MMPL checkpoints patched into models from ComfyUI's stock loaders hold exactly the checkpoint's weights, on every
loading path, with LoRAs in front applied on top; fp8 and scaled-fp8 bases take them too.

The ground truth is a model whose weights *are* the checkpoint, loaded by the same stock loader (with the same LoRA).
ComfyUI runs in a subprocess (tests/comfy/weights_probe.py); its cases are named base/checkpoint[/lora]/load path.
"""
import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfy
PROBE = Path(__file__).with_name("weights_probe.py")
PYTHON = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
CASES = ["fp32/safetensors/full", "fp32/pt/full", "fp32/safetensors/lora/full", "fp32/pt/lora/partial",
         "fp8/safetensors/lora/full", "fp8/pt/partial", "scaled_fp8/safetensors/lora/full", "scaled_fp8/pt/partial",
         "set/fp32/safetensors/lora/full", "set/fp32/pt/lora/partial"]
PLAN_TOLERANCE = 1e-4  # relative, float32 (the bound; the measured difference is 0)


@pytest.fixture(scope="module")
def probe(comfy_install, tmp_path_factory) -> dict:
    from models import populate_models

    work = tmp_path_factory.mktemp("comfy_weights")
    populate_models(work / "models")
    out = work / "results.json"
    done = subprocess.run([str(PYTHON), str(PROBE), str(out), str(work / "models")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    results = json.loads(out.read_text())
    print(json.dumps(results, indent=1))
    return results


@pytest.mark.parametrize("case", CASES)
def test_patched_model_holds_the_checkpoint_and_plans_like_merged_weights(probe, case):
    """float32, fp8 and scaled-fp8 bases, official .pt and safetensors checkpoints, full and partial loads, with and
    without a LoRA in front: every one of the 69 Wan parameters is in effect (modulation included), exactly as in a
    model loaded from the merged weights in the same format, and the plans are equal."""
    result = probe[case]
    assert result["weights_checked"] == 69
    assert result["weights_max_abs"] == 0.0
    assert result["plan_rel"] <= PLAN_TOLERANCE
    # the old way (plain "set" patches after the LoRA's) fails this very comparison
    assert result["legacy_weights_wrong"] >= 3 and result["legacy_plan_rel"] > 100 * PLAN_TOLERANCE


@pytest.mark.parametrize("case", [c for c in CASES if "/lora/" in c])
def test_a_lora_in_front_of_mmpl_model_applies_on_top(probe, case):
    assert probe[case]["lora_effect"] > 0.02  # the LoRA changes the plan (by ~6.5 % here)


def test_changing_the_checkpoint_over_one_loaded_base_takes_effect(probe):
    assert probe["swap"]["plan_rel"] <= PLAN_TOLERANCE


def test_loading_the_patched_model_again_keeps_the_lora(probe):
    assert probe["reload"]["changed"] == 0
