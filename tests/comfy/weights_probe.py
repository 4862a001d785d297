"""Measurements for test_comfy_weights.py, run as a script in its own process (importing ComfyUI parses arguments
and sets up devices process-wide, so the pytest process never imports it).

    python tests/comfy/weights_probe.py OUT.json MODELS_DIR

For each case (base weights and dtype, checkpoint file, LoRA or not, ComfyUI loading path) it builds two models with
ComfyUI's own loaders: MMPL Model's way (base → LoRA → checkpoint patched in by `patch_checkpoint`) and the ground
truth (a model whose weights *are* the checkpoint → the same LoRA), and records:

- ``weights``: the largest difference between the two models' effective Wan parameters after ComfyUI loaded them
  (the weight each op really computes with: dequantised, LoRA applied, on-the-fly patches of partial loads included);
- ``plan_rel``: the relative difference of a planned segment (our engine over each `WanModel`);
- ``lora_effect``: how much the LoRA changes the plan (cases with a LoRA);
- ``legacy_rel``: the same plan with the checkpoint applied the old way (plain "set" patches added after the LoRA's,
  none on the `modulation` parameters), to show what the test tells apart.
"""
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMFY_DIR = REPO / ".comfy" / "ComfyUI"
sys.path[0:1] = [str(COMFY_DIR), str(REPO)]
out_path, models_dir = Path(sys.argv[1]), Path(sys.argv[2])
sys.argv = [sys.argv[0], "--cpu"]

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()

import comfy.model_management  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402
import torch  # noqa: E402

from mmpl_core.layout import get_layout  # noqa: E402
from mmpl_core.sampling import SamplerConfig  # noqa: E402
from mmpl_core.segment import Prompt, SegmentSampler, plan_segment  # noqa: E402


def import_pack():
    """The pack as ComfyUI imports it: a package (its `nodes` must not collide with ComfyUI's nodes.py)."""
    spec = importlib.util.spec_from_file_location("mmpl_long_video", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["mmpl_long_video"] = module
    spec.loader.exec_module(module)
    from mmpl_long_video.nodes import comfy_adapters, model_nodes
    return comfy_adapters, model_nodes


adapters, model_nodes = import_pack()
for folder in ("diffusion_models", "loras", "mmpl"):
    folder_paths.add_model_folder_path(folder, str(models_dir / folder), is_default=True)
torch.set_num_threads(1)
CPU = torch.device("cpu")
LAYOUT = get_layout("mmpl-t2v-13")
LORA = "tiny_wan_lora.safetensors"
BASE, MERGED = "tiny_wan_t2v.safetensors", "tiny_wan_t2v_mmpl_merged.safetensors"
SCALED, MERGED_SCALED = "tiny_wan_t2v_scaled_fp8.safetensors", "tiny_wan_t2v_mmpl_merged_scaled_fp8.safetensors"


def load_base(name: str, dtype: str):
    options = {"dtype": torch.float8_e4m3fn} if dtype == "fp8_e4m3fn" else {}
    return comfy.sd.load_diffusion_model(str(models_dir / "diffusion_models" / name), model_options=options)


def with_lora(patcher, lora: bool):
    if not lora:
        return patcher
    import nodes  # ComfyUI's own nodes.py: LoraLoaderModelOnly

    return nodes.LoraLoaderModelOnly().load_lora_model_only(patcher, LORA, 1.0)[0]


def legacy_patch(patcher, checkpoint: str):
    """The old MMPL Model: every checkpoint tensor as a "set" patch appended after the patcher's own patches."""
    net = patcher.model.diffusion_model
    shapes = {k: tuple(p.shape) for k, p in adapters.wan_parameters(net).items()}
    from mmpl_core.checkpoints import load_matching_state_dict

    weights = load_matching_state_dict(models_dir / "mmpl" / checkpoint, shapes)
    patched = patcher.clone()
    patched.add_patches({f"diffusion_model.{k}": ("set", (v,)) for k, v in weights.items()})
    return patched


def load(patcher, path: str):
    comfy.model_management.unload_all_models()
    if path == "full":
        comfy.model_management.load_models_gpu([patcher])
    else:  # a partial (low-VRAM) load: nearly every op casts and patches its weight on the fly
        patcher.patch_model(device_to=CPU, lowvram_model_memory=1024)


def effective_weights(net) -> dict[str, torch.Tensor]:
    """Each Wan parameter as its op computes with it, in float32."""
    out = {}
    for key in adapters.wan_parameters(net):
        module_name, _, leaf = key.rpartition(".")
        module = net.get_submodule(module_name)
        if getattr(module, "comfy_cast_weights", False) and leaf in ("weight", "bias"):
            weight, bias = comfy.ops.cast_bias_weight(module, dtype=torch.float32, device=CPU)[:2]
            value = weight if leaf == "weight" else bias
            if leaf == "weight" and getattr(module, "scale_weight", None) is not None:
                value = value * module.scale_weight.float()
        else:
            value = getattr(module, leaf).float()
            convert = getattr(module, f"convert_{leaf}", None)
            if convert is not None:
                value = convert(value)
        out[key] = value.detach().float().clone()
    return out


@torch.no_grad()
def plan(net) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 16, 4096, generator=g)
    sampler = SegmentSampler(net, SamplerConfig("euler", 2, 3.0, 1.0), device=CPU, dtype=torch.float32)
    run = plan_segment(sampler, LAYOUT, Prompt(text), (16, 4, 4), seed=0, segment=0)
    return run.result.latents[:, sorted(run.result.known)].clone()


def measure(patcher, path: str):
    load(patcher, path)
    net = patcher.model.diffusion_model
    weights, latents = effective_weights(net), plan(net)
    patcher.unpatch_model(CPU)
    comfy.model_management.unload_all_models()
    return weights, latents


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def patch(patcher, checkpoint: str, mechanism: str):
    """MMPL Model's `patch_checkpoint`, with the mechanism of a classic ("object") or dynamic-VRAM ("set") patcher."""
    model_nodes.patch_mechanism = lambda _: mechanism
    return model_nodes.patch_checkpoint(patcher, f"mmpl/{checkpoint}")


def case(base: str, dtype: str, checkpoint: str, lora: bool, path: str, merged: str, mechanism: str = "object"):
    mmpl = patch(with_lora(load_base(base, dtype), lora), checkpoint, mechanism)
    got_w, got_plan = measure(mmpl, path)
    truth = with_lora(load_base(merged, dtype), lora)
    want_w, want_plan = measure(truth, "full")
    legacy_w, legacy_plan = measure(legacy_patch(with_lora(load_base(base, dtype), lora), checkpoint), "full")
    result = {  # float8 weights are compared as stored: "truth" loads the merged weights in the same dtype/format
        "weights_max_abs": max((got_w[k] - want_w[k]).abs().max().item() for k in want_w),
        "weights_max_rel": max(((got_w[k] - want_w[k]).abs() / want_w[k].abs().max()).max().item() for k in want_w),
        "weights_checked": len(want_w),
        "plan_rel": rel(got_plan, want_plan),
        "legacy_plan_rel": rel(legacy_plan, want_plan),
        "legacy_weights_wrong": sum(not torch.equal(legacy_w[k], want_w[k]) for k in want_w),
    }
    if merged != MERGED:  # how far the quantised format itself is from the float32 merged weights, for scale
        _, fp32_plan = measure(with_lora(load_base(MERGED, "default"), lora), "full")
        result["quantisation_plan_rel"] = rel(want_plan, fp32_plan)
    if lora:
        _, plain_plan = measure(patch(load_base(base, dtype), checkpoint, mechanism), "full")
        result["lora_effect"] = rel(got_plan, plain_plan)
    return result


def swap_case() -> dict:
    """Two MMPL Models over one loaded base (+ LoRA), run one after the other, as in a workflow whose checkpoint is
    changed and queued again: the second must not keep weights patched for the first. The second "checkpoint" is
    the base's own weights, so its truth is the base behind the LoRA."""
    base = with_lora(load_base(BASE, "default"), True)
    first = model_nodes.patch_checkpoint(base, "mmpl/tiny_mmpl.safetensors")
    comfy.model_management.load_models_gpu([first])
    plan(first.model.diffusion_model)
    second = model_nodes.patch_checkpoint(base, f"diffusion_models/{BASE}")
    comfy.model_management.load_models_gpu([second])  # ComfyUI swaps clones of one model in place
    got = plan(second.model.diffusion_model)
    comfy.model_management.unload_all_models()
    _, want = measure(with_lora(load_base(BASE, "default"), True), "full")
    return {"plan_rel": rel(got, want)}


def reload_case() -> dict:
    """MMPL Model behind a LoRA, loaded again by the next node (as Macro Chain then Content Populator do): the
    weights after the second load are those of the first."""
    mmpl = patch(with_lora(load_base(BASE, "fp8_e4m3fn"), True), "tiny_mmpl.safetensors", "object")
    comfy.model_management.load_models_gpu([mmpl])
    first = effective_weights(mmpl.model.diffusion_model)
    comfy.model_management.load_models_gpu([mmpl])
    second = effective_weights(mmpl.model.diffusion_model)
    comfy.model_management.unload_all_models()
    return {"changed": sum(not torch.equal(first[k], second[k]) for k in first)}


CASES = {  # base file, weight_dtype, checkpoint, LoRA, load path, the merged weights in the base's format
    "fp32/safetensors/full": (BASE, "default", "tiny_mmpl.safetensors", False, "full", MERGED),
    "fp32/pt/full": (BASE, "default", "tiny_mmpl.pt", False, "full", MERGED),
    "fp32/safetensors/lora/full": (BASE, "default", "tiny_mmpl.safetensors", True, "full", MERGED),
    "fp32/pt/lora/partial": (BASE, "default", "tiny_mmpl.pt", True, "partial", MERGED),
    "fp8/safetensors/lora/full": (BASE, "fp8_e4m3fn", "tiny_mmpl.safetensors", True, "full", MERGED),
    "fp8/pt/partial": (BASE, "fp8_e4m3fn", "tiny_mmpl.pt", False, "partial", MERGED),
    "scaled_fp8/safetensors/lora/full": (SCALED, "default", "tiny_mmpl.safetensors", True, "full", MERGED_SCALED),
    "scaled_fp8/pt/partial": (SCALED, "default", "tiny_mmpl.pt", False, "partial", MERGED_SCALED),
    # the dynamic-VRAM patchers' mechanism, on 0.3.75's classic patcher ("set" patches first, object patches on
    # modulation); with fp8 bases ComfyUI's stochastic re-rounding of set weights moves some by an ulp
    "set/fp32/safetensors/lora/full": (BASE, "default", "tiny_mmpl.safetensors", True, "full", MERGED, "set"),
    "set/fp32/pt/lora/partial": (BASE, "default", "tiny_mmpl.pt", True, "partial", MERGED, "set"),
}

with torch.inference_mode():  # as ComfyUI runs every node
    results = {"swap": swap_case(), "reload": reload_case(), **{name: case(*spec) for name, spec in CASES.items()}}
out_path.write_text(json.dumps(results, indent=2))
