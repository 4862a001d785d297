"""The real ComfyUI server: it starts with the pack loaded, runs a core workflow and rejects an invalid one."""
import pytest
import requests
from client import PromptRejected

pytestmark = pytest.mark.comfy


def image_workflow(width: int = 64, color: int = 0xFF8000) -> dict:
    """EmptyImage → SaveImage (core nodes only); vary `color` to keep ComfyUI's cache from skipping the run."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": 32, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "mmpl_probe"}},
    }


def test_server_starts(comfy_server):
    stats = comfy_server.client.get("/system_stats").json()
    print(f"ComfyUI {stats['system']['comfyui_version']} answered after {comfy_server.startup_seconds:.1f} s")
    assert stats["system"]["comfyui_version"] == "0.3.75"
    assert stats["devices"][0]["type"] == "cpu"


def test_pack_imported(comfy_server):
    log = comfy_server.log()
    pack_lines = [line for line in log.splitlines() if "custom_nodes/mmpl_long_video" in line]
    assert pack_lines and not any("IMPORT FAILED" in line for line in pack_lines), log[-5000:]
    pack_nodes = [name for name, info in comfy_server.client.object_info().items()
                  if "mmpl_long_video" in info.get("python_module", "")]
    assert pack_nodes, "the pack imported but registered no nodes"


def test_extensions_endpoint(comfy_server):
    extensions = comfy_server.client.get("/extensions").json()
    assert isinstance(extensions, list)


def test_core_workflow_runs(comfy_server):
    result = comfy_server.client.run(image_workflow(color=0x123456), timeout=60)
    assert result.error is None, result.error
    assert result.status["status_str"] == "success"
    assert {"execution_start", "executed", "execution_success"} <= set(result.message_types)
    (image,) = result.outputs["2"]["images"]
    png = comfy_server.client.view(image["filename"], image["subfolder"], image["type"])
    assert png.startswith(b"\x89PNG")
    assert (comfy_server.base_dir / "output" / image["filename"]).is_file()


def test_invalid_value_rejected_and_server_keeps_serving(comfy_server):
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.client.queue(image_workflow(width=0))
    (error,) = rejected.value.node_errors["1"]["errors"]
    assert error["type"] == "value_smaller_than_min"
    assert error["extra_info"]["input_name"] == "width"

    assert requests.get(comfy_server.url + "/system_stats", timeout=10).ok
    assert comfy_server.client.run(image_workflow(color=0x654321), timeout=60).status["status_str"] == "success"
