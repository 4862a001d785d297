"""Measurements for test_comfy_parity.py, run as a script in its own process: importing ComfyUI parses arguments,
probes devices and sets up logging process-wide, so the pytest process never imports it.

    python tests/comfy/parity_probe.py OUT.json WORK_DIR

1. ``direct``: ComfyUI's own tiny ``WanModel`` (float32, seeded weights): ComfyUI's ``forward`` vs our `wan_forward`
   over that same module, with contiguous positions and full visibility.
2. ``loader[prefix]``: our `build_random_model` saved with `save_wan_safetensors` (bare keys, and ComfyUI's
   ``model.diffusion_model.`` prefix) and loaded by ``comfy.sd.load_diffusion_model`` (what "Load Diffusion Model"
   calls): what ComfyUI detected, and its forward vs our forward over our own `WanDiT`.
"""
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMFY_DIR = REPO / ".comfy" / "ComfyUI"
# Replace this script's folder on sys.path: ComfyUI's top-level packages come first, then the project.
sys.path[0:1] = [str(COMFY_DIR), str(REPO)]
out_path, work_dir = Path(sys.argv[1]), Path(sys.argv[2])
sys.argv = [sys.argv[0], "--cpu"]

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()

import comfy.ldm.wan.model  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.sd  # noqa: E402
import torch  # noqa: E402

from mmpl_core.checkpoints import save_wan_safetensors  # noqa: E402
from mmpl_core.model import build_random_model, encode_text, get_config, init_random_weights, wan_forward  # noqa: E402

torch.set_num_threads(1)
CFG = get_config("tiny")
FRAMES = 5
PREFIXES = {"bare": "", "comfy": "model.diffusion_model."}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, CFG.in_dim, FRAMES, 8, 8, generator=g)
    context = torch.randn(2, 16, CFG.text_dim, generator=g)
    return x, torch.tensor([937.0, 212.0]), context


def ours(model: torch.nn.Module, x, t, context) -> torch.Tensor:
    return wan_forward(model, x, range(FRAMES), t, encode_text(model, context))


def comfy_wan_model() -> torch.nn.Module:
    model = comfy.ldm.wan.model.WanModel(
        model_type="t2v", patch_size=CFG.patch_size, in_dim=CFG.in_dim, dim=CFG.dim, ffn_dim=CFG.ffn_dim,
        freq_dim=CFG.freq_dim, text_dim=CFG.text_dim, out_dim=CFG.out_dim, num_heads=CFG.num_heads,
        num_layers=CFG.num_layers, eps=CFG.eps, device="cpu", dtype=torch.float32,
        operations=comfy.ops.disable_weight_init,  # leaves weights uninitialised: every one is filled below
    )
    return init_random_weights(model, seed=7).eval()


@torch.no_grad()
def direct() -> dict:
    model = comfy_wan_model()
    x, t, context = inputs()
    expected = model(x, t, context)
    got = ours(model, x, t, context)
    return {"shape": list(got.shape), "expected_shape": list(expected.shape), "rel_err": rel_err(got, expected)}


@torch.no_grad()
def loader(prefix: str) -> dict:
    reference = build_random_model(CFG, seed=11)
    path = save_wan_safetensors(reference, work_dir / f"tiny_{prefix or 'bare'}.safetensors", prefix=prefix)
    patcher = comfy.sd.load_diffusion_model(str(path))
    net = patcher.model.diffusion_model
    x, t, context = inputs(seed=1)
    expected = ours(reference, x, t, context)
    return {
        "model_class": type(patcher.model).__name__,
        "model_config": type(patcher.model.model_config).__name__,
        "diffusion_model": type(net).__name__,
        "model_type": net.model_type,
        "dim": net.dim,
        "num_heads": net.num_heads,
        "num_layers": net.num_layers,
        "dtype": str(next(net.parameters()).dtype),
        "comfy_forward_rel_err": rel_err(net(x, t, context), expected),
        "ours_over_comfy_rel_err": rel_err(ours(net, x, t, context), expected),
    }


results = {"direct": direct(), "loader": {name: loader(prefix) for name, prefix in PREFIXES.items()}}
out_path.write_text(json.dumps(results, indent=2))
