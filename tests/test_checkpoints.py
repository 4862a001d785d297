"""Checkpoint loading: every accepted format round-trips bit for bit into `WanDiT`, and bad files fail clearly."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors.torch import save_file

from mmpl_core.checkpoints import (
    DIFFUSERS_TO_WAN,
    CheckpointError,
    detect_format,
    infer_config,
    load_into,
    load_wan_model,
    load_wan_state_dict,
    save_wan_safetensors,
)
from mmpl_core.model import WanDiT, build_random_model, encode_text, get_config, wan_forward

TINY = get_config("tiny")


@pytest.fixture(scope="module")
def tiny():
    return build_random_model(TINY, seed=1)


@pytest.fixture(scope="module")
def tiny_sd(tiny):
    return {k: v.clone() for k, v in tiny.state_dict().items()}


def assert_same_weights(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    sd = model.state_dict()
    assert sd.keys() == reference.keys()
    for key, value in reference.items():
        assert sd[key].dtype == value.dtype, key
        assert torch.equal(sd[key], value), key


def diffusers_sd(wan_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' own Wan -> diffusers converter: an independent check of `DIFFUSERS_TO_WAN`."""
    return convert_wan_transformer_to_diffusers({k: v.clone() for k, v in wan_sd.items()})


# ------------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model.", "diffusion_model."])
def test_checkpoint_safetensors_round_trip(tmp_path, tiny_sd, prefix):
    path = save_wan_safetensors(tiny_sd, tmp_path / "wan.safetensors", prefix=prefix)
    model = load_wan_model(path)
    assert isinstance(model, WanDiT) and not model.training
    assert model.config == TINY
    assert_same_weights(model, tiny_sd)


def test_checkpoint_comfy_bundle_keeps_only_diffusion_model(tmp_path, tiny_sd):
    bundle = {"model.diffusion_model." + k: v for k, v in tiny_sd.items()}
    bundle["first_stage_model.decoder.conv_in.weight"] = torch.zeros(3)
    save_file(bundle, str(tmp_path / "bundle.safetensors"))
    assert_same_weights(load_wan_model(tmp_path / "bundle.safetensors"), tiny_sd)


def _write_shards(tmp_path, sd, name="diffusion_pytorch_model", index=True):
    keys = sorted(sd)
    parts = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    weight_map = {}
    for i, part in enumerate(parts):
        fname = f"{name}-{i + 1:05d}-of-00002.safetensors"
        save_file({k: sd[k].contiguous() for k in part}, str(tmp_path / fname))
        weight_map.update({k: fname for k in part})
    if index:
        (tmp_path / f"{name}.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return [tmp_path / f for f in sorted(set(weight_map.values()))]


def test_checkpoint_sharded_directory_loader(tmp_path, tiny_sd):
    shards = _write_shards(tmp_path, tiny_sd)
    assert_same_weights(load_wan_model(tmp_path), tiny_sd)  # directory with index
    assert_same_weights(load_wan_model(tmp_path / "diffusion_pytorch_model.safetensors.index.json"), tiny_sd)
    assert_same_weights(load_wan_model(shards), tiny_sd)  # explicit list of shards


def test_checkpoint_sharded_directory_without_index_loader(tmp_path, tiny_sd):
    _write_shards(tmp_path, tiny_sd, name="wan", index=False)
    assert_same_weights(load_wan_model(str(tmp_path)), tiny_sd)


def test_checkpoint_diffusers_rename_table_matches_diffusers_converter(tmp_path, tiny_sd):
    converted = diffusers_sd(tiny_sd)
    assert detect_format(converted) == "diffusers"
    assert "blocks.0.norm2.weight" in converted and "blocks.0.norm3.weight" not in converted  # the norm swap
    save_file(converted, str(tmp_path / "diffusers.safetensors"))
    assert_same_weights(load_wan_model(tmp_path / "diffusers.safetensors"), tiny_sd)
    assert infer_config(converted) == TINY
    assert len(DIFFUSERS_TO_WAN) >= 20


def test_checkpoint_diffusers_model_state_dict_loader(tmp_path, tiny_sd):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dmodel = WanTransformer3DModel(
            num_attention_heads=TINY.num_heads, attention_head_dim=TINY.head_dim, in_channels=TINY.in_dim,
            out_channels=TINY.out_dim, text_dim=TINY.text_dim, freq_dim=TINY.freq_dim, ffn_dim=TINY.ffn_dim,
            num_layers=TINY.num_layers,
        )
    dmodel.load_state_dict(diffusers_sd(tiny_sd), strict=True)
    _write_shards(tmp_path, dmodel.state_dict())  # diffusers' sharded layout
    assert_same_weights(load_wan_model(tmp_path), tiny_sd)


def test_checkpoint_mmpl_pt_generator_and_ema_loader(tmp_path, tiny_sd):
    ema_sd = build_random_model(TINY, seed=2).state_dict()
    path = tmp_path / "mmpl.pt"
    torch.save({
        "generator": {"model." + k: v for k, v in tiny_sd.items()},
        "generator_ema": {"model." + k: v for k, v in ema_sd.items()},
    }, path)
    assert_same_weights(load_wan_model(path), tiny_sd)
    assert_same_weights(load_wan_model(path, ema=True), ema_sd)
    assert not torch.equal(tiny_sd["head.head.weight"], ema_sd["head.head.weight"])


@pytest.mark.parametrize("ext", [".pt", ".pth", ".bin"])
def test_checkpoint_plain_torch_state_dict_loader(tmp_path, tiny_sd, ext):
    torch.save(tiny_sd, tmp_path / ("plain" + ext))
    assert_same_weights(load_wan_model(tmp_path / ("plain" + ext)), tiny_sd)


def test_checkpoint_loader_dtype_and_load_into(tmp_path, tiny_sd):
    path = save_wan_safetensors(tiny_sd, tmp_path / "wan.safetensors", dtype=torch.bfloat16)
    model = load_wan_model(path, dtype=torch.float16)
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert load_wan_state_dict(path)["head.head.weight"].dtype == torch.bfloat16
    target = WanDiT(TINY)
    load_into(target, tmp_path / "wan.safetensors")
    expected = {k: v.to(torch.bfloat16).float() for k, v in tiny_sd.items()}
    assert_same_weights(target, expected)


def test_checkpoint_in_memory_state_dict_loader(tiny_sd):
    model = load_wan_model(dict(tiny_sd))
    assert_same_weights(model, tiny_sd)
    # built on the meta device and assigned: the weights are not copied a second time
    assert model.head.head.weight.data_ptr() == tiny_sd["head.head.weight"].data_ptr()
    assert_same_weights(load_wan_model({"model.diffusion_model." + k: v for k, v in tiny_sd.items()}), tiny_sd)


def test_checkpoint_loaded_model_forward_matches(tmp_path, tiny):
    path = save_wan_safetensors(tiny, tmp_path / "wan.safetensors")
    loaded = load_wan_model(path)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, TINY.in_dim, 2, 4, 4, generator=gen)
    context = torch.randn(1, 5, TINY.text_dim, generator=gen)
    t = torch.tensor([500.0])
    with torch.no_grad():
        ref = wan_forward(tiny, x, [0, 1], t, encode_text(tiny, context))
        out = wan_forward(loaded, x, [0, 1], t, encode_text(loaded, context))
    assert torch.equal(out, ref)


# ------------------------------------------------------------------------------------------------- config


def test_checkpoint_infer_config_head_rule(tiny_sd):
    assert infer_config(tiny_sd) == TINY
    micro = get_config("micro")
    micro_sd = build_random_model(micro, seed=0).state_dict()
    with pytest.raises(CheckpointError, match="num_heads"):
        infer_config(micro_sd)
    assert infer_config(micro_sd, num_heads=2) == micro
    with pytest.raises(CheckpointError, match="num_heads"):
        load_wan_model(micro_sd)
    assert_same_weights(load_wan_model(micro_sd, num_heads=2), micro_sd)
    assert_same_weights(load_wan_model(micro_sd, config=micro), micro_sd)


def test_checkpoint_infer_config_optional_norms():
    cfg = get_config("micro").with_(qk_norm=False, cross_attn_norm=False, num_layers=3)
    sd = build_random_model(cfg, seed=0).state_dict()
    assert infer_config(sd, num_heads=2) == cfg


# ------------------------------------------------------------------------------------------------- errors


def test_checkpoint_error_missing_key(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    del sd["blocks.1.ffn.2.bias"]
    path = save_wan_safetensors(sd, tmp_path / "partial.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_wan_model(path)
    msg = str(err.value)
    assert "partial.safetensors" in msg and "missing keys (1)" in msg and "blocks.1.ffn.2.bias" in msg
    assert isinstance(err.value, ValueError)


def test_checkpoint_error_unexpected_key(tmp_path, tiny_sd):
    sd = dict(tiny_sd, **{"blocks.0.extra.weight": torch.zeros(2)})
    path = save_wan_safetensors(sd, tmp_path / "extra.safetensors")
    expected = r"(?s)extra\.safetensors.*unexpected keys \(1\).*blocks\.0\.extra\.weight"
    with pytest.raises(CheckpointError, match=expected):
        load_wan_model(path)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_into(WanDiT(TINY), sd)


def test_checkpoint_error_shape_mismatch(tmp_path, tiny_sd):
    sd = dict(tiny_sd, **{"blocks.1.ffn.0.weight": torch.zeros(255, 128)})
    path = save_wan_safetensors(sd, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_wan_model(path)
    msg = str(err.value)
    assert "bad.safetensors" in msg and "blocks.1.ffn.0.weight" in msg
    assert "expected (256, 128)" in msg and "found (255, 128)" in msg


def test_checkpoint_error_truncates_long_key_lists(tmp_path, tiny_sd):
    sd = {k: v for k, v in tiny_sd.items() if not k.startswith("blocks.1.")}
    sd.update({f"junk.{i}": torch.zeros(1) for i in range(25)})
    with pytest.raises(CheckpointError) as err:
        load_wan_model(sd, config=TINY)
    msg = str(err.value)
    assert "unexpected keys (25)" in msg and "15 more" in msg and "junk.24" not in msg
    assert f"missing keys ({sum(k.startswith('blocks.1.') for k in tiny_sd)})" in msg


def test_checkpoint_error_mmpl_pt_without_ema(tmp_path, tiny_sd):
    path = tmp_path / "no_ema.pt"
    torch.save({"generator": {"model." + k: v for k, v in tiny_sd.items()}, "step": torch.tensor(3)}, path)
    with pytest.raises(CheckpointError, match=r"(?s)no_ema\.pt.*generator_ema.*generator, step"):
        load_wan_model(path, ema=True)
    with pytest.raises(CheckpointError, match="generator_ema"):
        load_wan_model(save_wan_safetensors(tiny_sd, tmp_path / "w.safetensors"), ema=True)


def test_checkpoint_error_i2v_rejected(tiny_sd):
    extra = {"img_emb.proj.1.weight": torch.zeros(4, 4), "blocks.0.cross_attn.k_img.weight": torch.zeros(4)}
    i2v = dict(tiny_sd, **extra)
    with pytest.raises(CheckpointError, match="text-to-video"):
        infer_config(i2v)
    with pytest.raises(CheckpointError, match="T2V"):
        load_wan_model(i2v, config=TINY)
    with pytest.raises(CheckpointError, match="image-to-video"):
        load_wan_model(diffusers_sd(i2v))


def test_checkpoint_error_bad_paths(tmp_path):
    with pytest.raises(CheckpointError, match=r"(?s)nope\.safetensors.*does not exist.*\.pt"):
        load_wan_model(tmp_path / "nope.safetensors")
    (tmp_path / "weights.gguf").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"(?s)weights\.gguf.*safetensors"):
        load_wan_model(tmp_path / "weights.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no safetensors"):
        load_wan_model(tmp_path / "empty")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load_wan_model(tmp_path / "broken.safetensors")


CALLS: list[str] = []


def _record_call(tag: str) -> str:
    CALLS.append(tag)
    return tag


class Payload:
    """Unpickling this would call `_record_call`: weights-only loading must refuse it before any call."""

    def __reduce__(self):
        return _record_call, ("unpickled",)


def test_checkpoint_loader_refuses_pickled_objects(tmp_path, tiny_sd):
    path = tmp_path / "evil.pt"
    torch.save({"generator": {"model." + k: v for k, v in tiny_sd.items()}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"(?s)evil\.pt.*weights_only"):
        load_wan_model(path)
    assert CALLS == []
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load would have run it
    assert CALLS == ["unpickled"]
    CALLS.clear()
