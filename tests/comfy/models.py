"""The model files that the tests against the real ComfyUI server load, written before the server starts.

All tiny and built from fixed seeds (nothing comes from a hub), saved under ComfyUI's own key names so that its
stock "Load Diffusion Model" detects them:
- diffusion_models/tiny_wan_t2v.safetensors — a Wan2.1 T2V DiT (dim 128, 1 head of 128, 2 layers, text_dim 4096);
- mmpl/tiny_mmpl.safetensors — "MMPL weights" for it (same shapes, other values), patched in by MMPL Model;
- mmpl/tiny_wrong_shape.safetensors — a checkpoint that does not fit (ffn 512);
- diffusion_models/tiny_wan_i2v.safetensors — a Wan2.1 I2V (CLIP-vision) DiT, which MMPL Model must refuse;
- mmpl/tiny_mmpl.pt — the same MMPL weights in the authors' format ({'generator': {'model.' + key: tensor}});
- diffusion_models/tiny_wan_t2v_mmpl_merged.safetensors — the ground truth: a model whose weights *are* the MMPL
  checkpoint, loaded by the same stock loader;
- diffusion_models/tiny_wan_t2v_scaled_fp8.safetensors — the base in ComfyUI's scaled-fp8 format (`scaled_fp8`
  marker, fp8 Linear weights with a `scale_weight` each, like wan2.1_t2v_14B_fp8_scaled.safetensors), and
  tiny_wan_t2v_mmpl_merged_scaled_fp8.safetensors, the merged weights in that format;
- loras/tiny_wan_lora.safetensors — a rank-4 LoRA on every attention and feed-forward Linear;
- tiny stand-ins under the file names of the real-model templates (`STAND_INS`: Wan2.1-T2V-14B in fp8, the
  authors' MMPL checkpoints, the Wan VAE, a speed LoRA), which their API twins load.
"""
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from mmpl_core.checkpoints import save_wan_safetensors
from mmpl_core.model import WAN_CONFIGS, build_random_model
from mmpl_core.model.config import WanConfig

MODEL_FOLDERS = ("diffusion_models", "vae", "mmpl", "loras")
TINY_T2V = "tiny_wan_t2v.safetensors"
TINY_I2V = "tiny_wan_i2v.safetensors"
TINY_MMPL = "tiny_mmpl.safetensors"
WRONG_SHAPE = "tiny_wrong_shape.safetensors"
TINY_MMPL_PT = "tiny_mmpl.pt"
TINY_MERGED = "tiny_wan_t2v_mmpl_merged.safetensors"
TINY_SCALED_FP8 = "tiny_wan_t2v_scaled_fp8.safetensors"
TINY_MERGED_SCALED_FP8 = "tiny_wan_t2v_mmpl_merged_scaled_fp8.safetensors"
TINY_LORA = "tiny_wan_lora.safetensors"
FP8_MAX = 448.0  # largest finite float8_e4m3fn
# The real-model templates' files (ComfyUI's own Wan2.1 template names; the authors' checkpoint names).
WAN_14B_FP8 = "wan2.1_t2v_14B_fp8_e4m3fn.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"
MMPL_T2V, MMPL_I2V = "t2v_14B_8k.pt", "i2v_14B_6k.pt"
SPEED_LORA = "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors"
COMFY_PREFIX = "model.diffusion_model."


def i2v_state_dict(t2v: dict[str, torch.Tensor], seed: int = 3) -> dict[str, torch.Tensor]:
    """A Wan2.1 I2V DiT's extra tensors (image embedding MLP, image K/V per block, 36 input channels)."""
    g = torch.Generator().manual_seed(seed)
    dim = t2v["head.modulation"].shape[-1]
    sd = dict(t2v)
    rnd = lambda *shape: torch.randn(*shape, generator=g) * 0.02  # noqa: E731
    sd["patch_embedding.weight"] = rnd(dim, 36, 1, 2, 2)
    sd.update({"img_emb.proj.0.weight": torch.ones(1280), "img_emb.proj.0.bias": torch.zeros(1280),
               "img_emb.proj.1.weight": rnd(1280, 1280), "img_emb.proj.1.bias": torch.zeros(1280),
               "img_emb.proj.3.weight": rnd(dim, 1280), "img_emb.proj.3.bias": torch.zeros(dim),
               "img_emb.proj.4.weight": torch.ones(dim), "img_emb.proj.4.bias": torch.zeros(dim)})
    for block in {k.split(".")[1] for k in t2v if k.startswith("blocks.")}:
        p = f"blocks.{block}.cross_attn."
        sd.update({p + "k_img.weight": rnd(dim, dim), p + "k_img.bias": torch.zeros(dim),
                   p + "v_img.weight": rnd(dim, dim), p + "v_img.bias": torch.zeros(dim),
                   p + "norm_k_img.weight": torch.ones(dim)})
    return sd


def scaled_fp8_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's scaled-fp8 layout: every 2-D (Linear) weight as fp8 of weight / scale with its float32
    `scale_weight` (amax / 448), the other tensors as they are, and the `scaled_fp8` marker."""
    out = {}
    for key, value in sd.items():
        if key.endswith(".weight") and value.ndim == 2:
            scale = value.abs().max().float() / FP8_MAX
            out[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[key] = value
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def lora_state_dict(sd: dict[str, torch.Tensor], rank: int = 4, seed: int = 5) -> dict[str, torch.Tensor]:
    """A LoRA in ComfyUI's generic format (diffusion_model.<module>.lora_up/lora_down.weight) on every block Linear."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in sd.items():
        if key.startswith("blocks.") and key.endswith(".weight") and value.ndim == 2:
            name = "diffusion_model." + key[: -len(".weight")]
            out[name + ".lora_up.weight"] = torch.randn(value.shape[0], rank, generator=g) * 0.07
            out[name + ".lora_down.weight"] = torch.randn(rank, value.shape[1], generator=g) * 0.07
    return out


def populate_models(models_dir: Path) -> None:
    """Fill `models_dir` (the server's ``<base directory>/models``); called once per session before start-up."""
    for folder in MODEL_FOLDERS:
        (models_dir / folder).mkdir(parents=True, exist_ok=True)
    tiny = build_random_model(WAN_CONFIGS["tiny"], seed=0).state_dict()
    save_wan_safetensors(tiny, models_dir / "diffusion_models" / TINY_T2V, prefix=COMFY_PREFIX)
    mmpl = build_random_model(WAN_CONFIGS["tiny"], seed=1).state_dict()
    save_wan_safetensors(mmpl, models_dir / "mmpl" / TINY_MMPL)
    torch.save({"generator": {"model." + k: v for k, v in mmpl.items()}}, models_dir / "mmpl" / TINY_MMPL_PT)
    save_wan_safetensors(mmpl, models_dir / "diffusion_models" / TINY_MERGED, prefix=COMFY_PREFIX)
    for name, weights in ((TINY_SCALED_FP8, tiny), (TINY_MERGED_SCALED_FP8, mmpl)):
        save_file({COMFY_PREFIX + k: v.contiguous() for k, v in scaled_fp8_state_dict(weights).items()},
                  str(models_dir / "diffusion_models" / name))
    save_file(lora_state_dict(tiny), str(models_dir / "loras" / TINY_LORA))
    wrong = WanConfig(dim=128, ffn_dim=512, num_heads=1, num_layers=2)
    save_wan_safetensors(build_random_model(wrong, seed=2), models_dir / "mmpl" / WRONG_SHAPE)
    save_wan_safetensors(i2v_state_dict(tiny), models_dir / "diffusion_models" / TINY_I2V, prefix=COMFY_PREFIX)
    populate_stand_ins(models_dir, tiny, mmpl)


def populate_stand_ins(models_dir: Path, base: dict[str, torch.Tensor], mmpl: dict[str, torch.Tensor]) -> None:
    """The real-model templates' files, tiny: the base in fp8 (as the real file), the MMPL checkpoints in the
    authors' format (the I2V one has no generator_ema, as the real one), the demo's tiny Wan VAE, a LoRA."""
    from mmpl_core.demo import DemoBundle

    save_wan_safetensors(base, models_dir / "diffusion_models" / WAN_14B_FP8, dtype=torch.float8_e4m3fn,
                         prefix=COMFY_PREFIX)
    generator = {"model." + k: v for k, v in mmpl.items()}
    torch.save({"generator": generator, "generator_ema": generator}, models_dir / "mmpl" / MMPL_T2V)
    torch.save({"generator": generator}, models_dir / "mmpl" / MMPL_I2V)
    shutil.copyfile(DemoBundle.load("mmpl").vae, models_dir / "vae" / WAN_VAE)
    save_file(lora_state_dict(base), str(models_dir / "loras" / SPEED_LORA))
