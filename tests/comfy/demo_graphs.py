"""API-format graphs over the embedded demo model, shared by the ComfyUI tests and bench/comfy_scheduler.py."""
from __future__ import annotations

DEMO_TEXT = "a red circle"


def demo_chain(segments: int, seed: int, steps: int = 4, text: str = DEMO_TEXT) -> dict:
    """Demo model, Demo VAE, Demo Text Encode and the VAE bridge → Macro Chain (node "6"; 64×64, Euler, CFG 1)."""
    return {
        "1": {"class_type": "MMPL_Model", "inputs": {"checkpoint": "demo: MMPL (embedded)", "layout": "auto"}},
        "2": {"class_type": "MMPL_DemoVAE", "inputs": {}},
        "3": {"class_type": "MMPL_DemoTextEncode", "inputs": {"text": text}},
        "4": {"class_type": "MMPL_DemoTextEncode", "inputs": {"text": ""}},
        "5": {"class_type": "MMPL_VAEBridge", "inputs": {"vae": ["2", 0], "mode": "vae", "color_anchor": 0.0}},
        "6": {"class_type": "MMPL_MacroChain", "inputs": {
            "mmpl_model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0], "bridge": ["5", 0],
            "segments": segments, "width": 64, "height": 64, "seed": seed, "steps": steps, "cfg": 1.0, "shift": 3.0,
            "sampler": "euler"}},
    }


def with_scheduler(prompt: dict, devices: str, *, mode: str = "throughput", cfg_branches: str = "batched",
                   policy: str = "auto (chosen by simulation)") -> dict:
    """`prompt` with an MMPL Multi-GPU Scheduler (node "7") on `devices` connected to its Macro Chain."""
    prompt["7"] = {"class_type": "MMPL_MultiGPUScheduler", "inputs": {
        "devices": devices, "max_parallel": 0, "mode": mode, "cfg_branches": cfg_branches, "policy": policy}}
    prompt["6"]["inputs"]["devices"] = ["7", 0]
    return prompt
