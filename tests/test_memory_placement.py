"""Placement-aware memory figures against real allocations, the ComfyUI memory contract, the placement chooser's
properties, and the `mmpl` options that place weights and the KV cache."""
from __future__ import annotations

import json

import pytest
import torch

from mmpl_core.cli import main
from mmpl_core.layout import WAN_T2V
from mmpl_core.memory import (
    GIB, Placement, block_bytes, device_bytes_beyond_weights, dit_device_bytes, dit_params, estimate_memory,
    kv_cache_bytes,
)
from mmpl_core.model import WAN_CONFIGS, FrameKVCache, build_random_model
from mmpl_core.model.fp8 import store_linear_weights_in_float8
from mmpl_core.model.streaming import stream_blocks
from mmpl_core.placement import RESERVED_GIB, choose_placement, typical_device
from mmpl_core.plan_store import load_plan
from mmpl_core.sampling import SamplerConfig
from mmpl_core.segment import Prompt, SegmentSampler, plan_segment, populate_segment

MICRO = WAN_CONFIGS["micro"]
FP8 = "float8_e4m3fn"


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("weight_dtype", ["compute", FP8])
def test_weight_bytes_on_device_equal_the_placed_model(weight_dtype):
    cfg = MICRO.with_(num_layers=4)
    model = build_random_model(cfg, seed=0)
    if weight_dtype == FP8:
        store_linear_weights_in_float8(model)
    block = model.blocks[0]
    assert block_bytes(cfg, 4, weight_dtype) == _bytes([*block.parameters(), *block.buffers()])
    swap = stream_blocks(model, "cpu", 1)
    outside = [p for name, p in model.named_parameters() if not name.startswith("blocks.")]
    resident = [*model.blocks[0].parameters(), *model.blocks[0].buffers()]
    dequantised = cfg.dim * cfg.ffn_dim * 4 if weight_dtype == FP8 else 0  # the ffn weight while it runs
    expected = _bytes(outside) + _bytes(resident) + swap.device_bytes() + dequantised
    assert dit_device_bytes(cfg, 4, Placement(blocks_on_device=1, weight_dtype=weight_dtype)) == expected
    assert dit_device_bytes(cfg, 4) == dit_params(cfg) * 4


def _run(kv_cache, kv_dtype, spy=None):
    model = build_random_model(MICRO, seed=0)
    sampler = SegmentSampler(model, SamplerConfig(steps=1, guidance=5.0), kv_cache=kv_cache)
    gen = torch.Generator().manual_seed(0)
    prompt = Prompt(*(torch.randn(1, 512, MICRO.text_dim, generator=gen) for _ in range(2)))
    planned = plan_segment(sampler, WAN_T2V, prompt, (16, 4, 6), seed=0, segment=0, kv_dtype=kv_dtype)
    return populate_segment(sampler, WAN_T2V, prompt, planned.result, seed=0, segment=0, kv_dtype=kv_dtype)


def test_kv_bytes_on_device_equal_the_real_cache_and_staging(monkeypatch):
    """float8 on the device: the allocated cache (values and scales) plus one layer's dequantised read; in CPU memory:
    at its fullest, the staged copies of the two layers in flight (measured at every read)."""
    populate = dict(role="populate", guidance=5.0, nbytes=4)
    est = estimate_memory(MICRO, WAN_T2V, 32, 48, **populate, placement=Placement(kv_dtype=FP8))
    tpf, visible = est.extra["tokens_per_frame"], est.extra["visible"]
    one_layer_read = 2 * 2 * visible * tpf * MICRO.dim  # K and V, batch 2
    assert _run("device", FP8).cache_bytes == est.kv_cache - one_layer_read * 4
    in_flight, read = [], FrameKVCache.read

    def spying_read(self, layer, frames):
        in_flight.append(sum(_bytes(entry[1:3]) for entry in self._staged.values()))
        return read(self, layer, frames)

    monkeypatch.setattr(FrameKVCache, "read", spying_read)
    run = _run("cpu", "compute")
    est = estimate_memory(MICRO, WAN_T2V, 32, 48, **populate, placement=Placement(kv_cache="cpu"))
    assert max(in_flight) == est.kv_cache and est.extra["host_kv"] == run.cache_bytes


def test_device_bytes_beyond_weights_is_the_estimators_sampling_share():
    cfg = WAN_CONFIGS["14B"]
    for kv_cache, kv_dtype, role in (("device", "compute", "segment"), ("cpu", FP8, "populate"),
                                     ("cpu", "compute", "plan")):
        est = estimate_memory(cfg, WAN_T2V, 480, 832, role=role, guidance=5.0,
                              placement=Placement(kv_cache=kv_cache, kv_dtype=kv_dtype))
        got = device_bytes_beyond_weights(cfg, WAN_T2V, 480, 832, role=role, guidance=5.0, kv_cache=kv_cache,
                                          kv_dtype=kv_dtype)
        assert got == est.kv_cache + est.text_kv + est.activations == est.sampling - est.weights - est.vae
    on_device = device_bytes_beyond_weights(cfg, WAN_T2V, 480, 832)
    in_cpu = device_bytes_beyond_weights(cfg, WAN_T2V, 480, 832, kv_cache="cpu")
    staged = 2 * (2 * 2 * 15 * 1560 * cfg.dim * 2)  # two layers in flight: K and V, batch 2, 15 visible frames
    assert on_device - in_cpu == kv_cache_bytes(cfg, 15, 1560, batch=2) - staged
    one_branch = device_bytes_beyond_weights(cfg, WAN_T2V, 480, 832, guidance=1.0)
    assert one_branch < on_device / 1.9


@pytest.mark.parametrize("size", ["14B", "1.3B"])
def test_placement_chooser_fits_and_never_gets_slower_with_more_memory(size):
    cfg, previous = WAN_CONFIGS[size], None
    for gib in (12, 14, 16, 20, 24, 32, 40, 48, 64, 80):
        best, candidates = choose_placement(cfg, WAN_T2V, 480, 832, gib, typical_device(24))
        assert best.fits and best.peak <= (gib - RESERVED_GIB) * GIB
        assert best.seconds == min(c.seconds for c in candidates if c.fits)
        if previous is not None:
            assert best.seconds <= previous.seconds
        previous = best
    assert best.placement == Placement() and best.transfer_bytes == 0  # 80 GiB: everything resident
    assert best.slowdown == pytest.approx(1.0, rel=1e-12)


def test_placement_goal_14b_in_24_gib():
    best, _ = choose_placement(WAN_CONFIGS["14B"], WAN_T2V, 480, 832, 24)
    assert best.peak <= 22 * GIB and best.slowdown <= 1.3
    assert best.placement.kv_cache == "cpu" and best.lossy == 0  # exact: no 8-bit, CFG batched
    forced, _ = choose_placement(WAN_CONFIGS["14B"], WAN_T2V, 480, 832, 24, fixed={"kv_cache": "device"})
    assert not forced.fits  # a 38 GB cache cannot live on a 24 GiB device, whatever else streams
    with pytest.raises(ValueError, match="unknown choices"):
        choose_placement(WAN_CONFIGS["14B"], WAN_T2V, 480, 832, 24, fixed={"kv_cache_size": 1})


def test_estimate_command_chooses_a_placement(capsys):
    assert main(["estimate", "--model", "random:14B", "--preset", "official", "--gpu-gib", "24", "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["fits"] and result["peak_gib"] <= 22 and result["predicted_slowdown"] <= 1.3
    assert result["placement"]["kv_cache"] == "cpu" and result["device"]["name"] == "RTX 4090"
    assert "--kv-cache cpu" in out and "TFLOP/s" in out and "25 GB/s host-to-device" in out
    assert main(["estimate", "--model", "random:14B", "--gpu-gib", "24", "--kv-cache", "device", "--json"]) == 0
    assert not json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fits"]
    with pytest.raises(SystemExit, match="--blocks-on-device 41: the DiT has 40 blocks"):
        main(["estimate", "--model", "random:14B", "--blocks-on-device", "41"])


FAST = ["--model", "random:micro", "--layout", "mmpl-t2v-9", "--size", "32", "32", "--steps", "2", "--cfg", "2"]


def _latents(plan_dir):
    return [s.latents.latents.nan_to_num(7.0) for s in load_plan(plan_dir).segments]


def test_cli_placement_options_keep_the_plan_bits(tmp_path, capsys):
    args = ["plan", *FAST, "--prompt", "a", "--segments", "2"]
    assert main([*args, "--plan-dir", str(tmp_path / "a")]) == 0
    assert main([*args, "--plan-dir", str(tmp_path / "b"), "--kv-cache", "cpu", "--blocks-on-device", "0"]) == 0
    assert main([*args, "--plan-dir", str(tmp_path / "c"), "--gpu-gib", str(RESERVED_GIB + 1e-4)]) == 0
    assert "placement for 2.0 GiB: weights 0/2 blocks resident" in capsys.readouterr().err  # auto: tiny budget
    for other in ("b", "c"):
        assert all(torch.equal(x, y) for x, y in zip(_latents(tmp_path / "a"), _latents(tmp_path / other)))


def test_cli_float8_kv_cache_is_a_plan_setting_and_float8_weights_another_model(tmp_path):
    args = [*FAST, "--prompt", "a", "--segments", "2"]
    assert main(["generate", *args, "--kv-dtype", FP8, "--out", str(tmp_path / "g.mp4")]) == 0
    assert main(["plan", *args, "--kv-dtype", FP8, "--plan-dir", str(tmp_path / "p")]) == 0
    assert load_plan(tmp_path / "p").settings.kv_dtype == FP8
    assert main(["populate", *FAST[:4], "--plan-dir", str(tmp_path / "p")]) == 0  # K/V dtype from the plan
    assert all(torch.equal(x, y) for x, y in zip(_latents(tmp_path / "g.plan"), _latents(tmp_path / "p")))
    assert main(["plan", *args, "--plan-dir", str(tmp_path / "q")]) == 0
    assert not torch.equal(_latents(tmp_path / "q")[0], _latents(tmp_path / "p")[0])
    float8_weights = ["--weight-dtype", FP8, "--blocks-on-device", "1"]
    assert main(["plan", *args, *float8_weights, "--plan-dir", str(tmp_path / "w")]) == 0
    with pytest.raises(SystemExit, match="plan was made with another model"):
        main(["populate", *FAST[:4], "--plan-dir", str(tmp_path / "w")])
    with pytest.raises(SystemExit, match="expected a number of blocks or 'auto'"):
        main(["plan", *args, "--blocks-on-device", "half", "--plan-dir", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="the demo model stays as it is"):
        main(["plan", "--prompt", "a", "--weight-dtype", FP8, "--plan-dir", str(tmp_path / "y")])


def test_cli_wan_folder_with_streamed_blocks_gives_the_same_plan(tmp_path):
    from wan_tiny import build_parts, write_mmpl_checkpoint, write_original

    folder = write_original(tmp_path / "wan", *build_parts(seed=2))
    checkpoint, _, _ = write_mmpl_checkpoint(tmp_path / "t2v_tiny.pt")
    args = ["plan", "--wan", str(folder), "--checkpoint", str(checkpoint), "--prompt", "a red circle", "--segments",
            "2", "--steps", "1", "--size", "32", "32", "--dtype", "float32"]
    assert main([*args, "--plan-dir", str(tmp_path / "a")]) == 0
    placed = ["--kv-cache", "cpu", "--blocks-on-device", "1", "--text-encoder-on", "cpu"]
    assert main([*args, *placed, "--plan-dir", str(tmp_path / "b")]) == 0
    assert all(torch.equal(x, y) for x, y in zip(_latents(tmp_path / "a"), _latents(tmp_path / "b")))
