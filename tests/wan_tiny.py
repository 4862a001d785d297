"""Tiny Wan2.1 model folders for tests: a micro DiT, a base-8 VAE, a 2-layer umT5 and a sentencepiece tokenizer
trained on a few sentences, saved in the diffusers layout and in the original Wan2.1 layout (same weights)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from mmpl_core.checkpoints import save_wan_safetensors
from mmpl_core.model import WanConfig, build_random_model

DIT = WanConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=32, freq_dim=32)
SENTENCES = [
    "a red circle bounces over a blue floor", "the yellow square slides to the left", "dawn over the sea",
    "a cat walks in the snow at night", "noon, bright light on the hills", "dusk and long shadows",
]

# transformers UMT5 names → Wan's t5.py names, written out from Wan's module tree (T5Encoder: token_embedding,
# blocks[i].{norm1, attn.{q,k,v,o}, pos_embedding.embedding, norm2, ffn.{gate.0, fc1, fc2}}, norm), independently
# of the production regex table.
HF_TO_WAN_BLOCK = {
    "layer.0.layer_norm.weight": "norm1.weight",
    "layer.0.SelfAttention.q.weight": "attn.q.weight",
    "layer.0.SelfAttention.k.weight": "attn.k.weight",
    "layer.0.SelfAttention.v.weight": "attn.v.weight",
    "layer.0.SelfAttention.o.weight": "attn.o.weight",
    "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
    "layer.1.layer_norm.weight": "norm2.weight",
    "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
    "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight",
    "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight",
}


def train_tokenizer(folder: Path):
    """A sentencepiece unigram model trained on `SENTENCES`, saved as a T5 tokenizer folder; returns the tokenizer."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 4), model_writer=model, vocab_size=60, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(model.getvalue())
    tokenizer = T5Tokenizer.from_pretrained(str(folder), extra_ids=0)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def build_umt5(seed: int = 0):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=64, d_model=DIT.text_dim, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", dropout_rate=0.0)
    torch.manual_seed(seed)
    model = UMT5EncoderModel(config).eval()
    with torch.no_grad():  # layer norms away from 1 so that a swapped norm would show
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.mul_(1 + 0.2 * torch.randn_like(p))
    return model


def wan_t5_state_dict(model) -> dict[str, torch.Tensor]:
    """The umT5 encoder's weights under Wan's t5.py names (what models_t5_umt5-xxl-enc-bf16.pth holds)."""
    out = {"token_embedding.weight": model.shared.weight, "norm.weight": model.encoder.final_layer_norm.weight}
    for key, value in model.state_dict().items():
        if key.startswith("encoder.block."):
            _, _, i, rest = key.split(".", 3)
            out[f"blocks.{i}.{HF_TO_WAN_BLOCK[rest]}"] = value
    return {k: v.detach().clone() for k, v in out.items()}


def build_parts(seed: int = 0):
    """(dit, vae, umt5): the same weights for both layouts."""
    from mmpl_core.vae import build_tiny_vae

    return build_random_model(DIT, seed=seed), build_tiny_vae(8, seed=seed), build_umt5(seed)


def write_original(root: Path, dit, vae, umt5, *, with_dit: bool = True) -> Path:
    from mmpl_core.data.distill_vae import original_state_dict

    root.mkdir(parents=True, exist_ok=True)
    if with_dit:
        save_wan_safetensors(dit, root / "diffusion_pytorch_model.safetensors")
        (root / "config.json").write_text(json.dumps({
            "_class_name": "WanModel", "model_type": "t2v", "dim": DIT.dim, "ffn_dim": DIT.ffn_dim,
            "num_heads": DIT.num_heads, "num_layers": DIT.num_layers, "in_dim": 16, "out_dim": 16,
            "text_dim": DIT.text_dim, "freq_dim": DIT.freq_dim, "text_len": 512, "eps": 1e-6}))
    torch.save(original_state_dict(vae.vae), root / "Wan2.1_VAE.pth")
    torch.save(wan_t5_state_dict(umt5), root / "models_t5_umt5-xxl-enc-bf16.pth")
    train_tokenizer(root / "google" / "umt5-xxl")
    return root


def write_diffusers(root: Path, dit, vae, umt5) -> Path:
    """diffusers layout; the transformer in diffusers names (diffusers' own converter), in two shards + index."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"], "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"]}))
    sd = convert_wan_transformer_to_diffusers({k: v.clone() for k, v in dit.state_dict().items()})
    transformer = root / "transformer"
    transformer.mkdir()
    keys = sorted(sd)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: sd[k].contiguous() for k in part}, str(transformer / name))
        weight_map.update({k: name for k in part})
    (transformer / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (transformer / "config.json").write_text(json.dumps({
        "_class_name": "WanTransformer3DModel", "num_attention_heads": DIT.num_heads,
        "attention_head_dim": DIT.head_dim, "ffn_dim": DIT.ffn_dim, "num_layers": DIT.num_layers,
        "in_channels": 16, "out_channels": 16, "text_dim": DIT.text_dim, "freq_dim": DIT.freq_dim,
        "patch_size": [1, 2, 2], "qk_norm": "rms_norm_across_heads", "cross_attn_norm": True, "eps": 1e-6}))
    vae.vae.save_pretrained(str(root / "vae"))
    umt5.save_pretrained(str(root / "text_encoder"))
    train_tokenizer(root / "tokenizer")
    return root


def write_mmpl_checkpoint(path: Path, seed: int = 5) -> tuple[Path, dict, dict]:
    """An official-format MMPL .pt: {'generator': {'model.' + key: ...}, 'generator_ema': {...}}."""
    gen = build_random_model(DIT, seed=seed).state_dict()
    ema = build_random_model(DIT, seed=seed + 1).state_dict()
    torch.save({"generator": {"model." + k: v for k, v in gen.items()},
                "generator_ema": {"model." + k: v for k, v in ema.items()}}, path)
    return path, gen, ema
