"""umT5 text encoder: Wan's key names map onto transformers' UMT5 (checked against an independent forward written
from Wan's T5 encoder), the padding is zeroed, prompts are cleaned and encoded once."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmpl_core.umt5 import (
    TextEncoderError, UMT5TextEncoder, clean_prompt, load_tokenizer, load_umt5_model, wan_t5_to_hf,
)
from wan_tiny import build_umt5, train_tokenizer, wan_t5_state_dict


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok") / "google" / "umt5-xxl"
    train_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def umt5():
    return build_umt5(seed=3)


def _bucket(rel: torch.Tensor, num_buckets: int, max_dist: int = 128) -> torch.Tensor:
    """Bidirectional T5 relative-position bucket (Wan's T5RelativeEmbedding)."""
    half = num_buckets // 2
    out = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    large = exact + (torch.log(rel.float().clamp(min=1) / exact) / math.log(max_dist / exact) * (half - exact)).long()
    return out + torch.where(rel < exact, rel, large.clamp(max=half - 1))


def _rms(x, w, eps=1e-6):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def wan_t5_reference(sd: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """Wan's umT5 encoder forward over Wan-named weights: per block, x += attn(norm1 x) with a per-block relative
    bias and the padding masked (no 1/sqrt(d) scaling), x += fc2(fc1(y) * gelu_tanh(gate(y))) with y = norm2 x."""
    x = sd["token_embedding.weight"][ids]
    n = ids.shape[1]
    rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("blocks.")})
    for i in blocks:
        w = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        y = _rms(x, w["norm1.weight"])
        q, k, v = (F.linear(y, w[f"attn.{p}.weight"]).unflatten(-1, (heads, -1)) for p in "qkv")
        table = w["pos_embedding.embedding.weight"]
        bias = table[_bucket(rel, table.shape[0])].permute(2, 0, 1)[None]  # [1, H, n, n]
        bias = bias.masked_fill(mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        att = torch.softmax(torch.einsum("binc,bjnc->bnij", q, k) + bias, -1)
        x = x + F.linear(torch.einsum("bnij,bjnc->binc", att, v).flatten(2), w["attn.o.weight"])
        y = _rms(x, w["norm2.weight"])
        hidden = F.linear(y, w["ffn.fc1.weight"]) * F.gelu(F.linear(y, w["ffn.gate.0.weight"]), approximate="tanh")
        x = x + F.linear(hidden, w["ffn.fc2.weight"])
    return _rms(x, sd["norm.weight"])


def test_umt5_wan_keys_map_onto_transformers(tmp_path, umt5, tokenizer_dir):
    wan_sd = wan_t5_state_dict(umt5)
    path = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save(wan_sd, path)
    model = load_umt5_model(path)
    assert model.config.num_heads == 4 and model.config.d_kv == 8 and model.config.num_layers == 2
    for key, value in umt5.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.shared.weight.data_ptr() == model.encoder.embed_tokens.weight.data_ptr()  # still tied
    encoder = UMT5TextEncoder(model, load_tokenizer(tokenizer_dir), text_len=24)
    ids, mask = encoder.tokenize("a red circle bounces over the sea")
    with torch.no_grad():
        expected = wan_t5_reference(wan_sd, ids, mask, heads=4)
    got = encoder.encode("a red circle bounces over the sea")
    n = int(mask.sum())
    assert torch.allclose(got[0, :n], expected[0, :n], atol=1e-5), (got[0, :n] - expected[0, :n]).abs().max()


def test_umt5_padding_is_zeroed_and_tokens_end_with_eos(umt5, tokenizer_dir):
    encoder = UMT5TextEncoder(umt5, load_tokenizer(tokenizer_dir), text_len=32)
    out = encoder.encode("a cat walks in the snow")
    ids, mask = encoder.tokenize("a cat walks in the snow")
    n = int(mask.sum())
    assert out.shape == (1, 32, 32) and out.dtype == torch.float32
    assert ids[0, n - 1] == encoder.tokenizer.eos_token_id and ids[0, n:].eq(encoder.tokenizer.pad_token_id).all()
    assert 2 < n < 32
    assert torch.count_nonzero(out[0, n:]) == 0
    assert out[0, :n].abs().sum(-1).gt(0).all()
    # the model itself gives non-zero outputs at padded positions: the zeros are Wan's post-processing
    with torch.no_grad():
        raw = umt5(input_ids=ids, attention_mask=mask).last_hidden_state
    assert raw[0, n:].abs().sum() > 0
    assert torch.allclose(raw[0, :n], out[0, :n])


def test_umt5_prompt_cleaning_truncation_and_cache(umt5, tokenizer_dir, monkeypatch):
    assert clean_prompt("  a  red\n\tcircle &amp;amp; sea ") == "a red circle & sea"
    encoder = UMT5TextEncoder(umt5, load_tokenizer(tokenizer_dir), text_len=8)
    assert torch.equal(encoder.encode("a  red circle"), encoder.encode("a red circle"))  # whitespace-cleaned
    _, mask = encoder.tokenize(" ".join(["the yellow square slides"] * 10))
    assert mask.shape == (1, 8) and int(mask.sum()) == 8  # truncated to text_len
    calls = []
    real_forward = umt5.forward
    monkeypatch.setattr(umt5, "forward", lambda *a, **k: calls.append(1) or real_forward(*a, **k))
    encoder = UMT5TextEncoder(umt5, load_tokenizer(tokenizer_dir), text_len=8)
    first = encoder.encode("dawn over the sea")
    for _ in range(3):
        assert encoder.encode("dawn over the sea") is first
    encoder.encode("dusk")
    assert len(calls) == 2


def test_umt5_bad_inputs_are_named(tmp_path, umt5):
    bad = tmp_path / "t5.pth"
    torch.save({**wan_t5_state_dict(umt5), "blocks.0.extra.weight": torch.zeros(1)}, bad)
    with pytest.raises(TextEncoderError, match=r"t5\.pth.*blocks\.0\.extra\.weight"):
        load_umt5_model(bad)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(TextEncoderError, match="token_embedding.weight"):
        load_umt5_model(tmp_path / "other.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderError, match="config.json"):
        load_umt5_model(tmp_path / "empty")
    with pytest.raises(TextEncoderError, match="tokenizer"):
        load_tokenizer(tmp_path / "empty")
    assert set(wan_t5_to_hf({"norm.weight": torch.ones(2)})) == {"encoder.final_layer_norm.weight"}
