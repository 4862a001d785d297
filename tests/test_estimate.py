"""Memory and FLOP estimates: exact against the real KV cache, parameter counts and a FLOP counter on tiny models;
the reference's figures for 14B at 480×832."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mmpl_core.cli import main
from mmpl_core.layout import WAN_T2V
from mmpl_core.memory import (
    GB, GIB, cached_frames, dit_params, estimate_memory, kv_cache_bytes, step_flops, text_context_bytes,
)
from mmpl_core.model import WAN_CONFIGS, FrameKVCache, WanDiT, build_random_model, encode_text, wan_forward
from mmpl_core.sampling import SamplerConfig
from mmpl_core.segment import Prompt, SegmentSampler, plan_segment, populate_segment

MICRO = WAN_CONFIGS["micro"]


@pytest.mark.parametrize("size", sorted(WAN_CONFIGS))
def test_estimate_weights_equal_parameter_bytes(size):
    with torch.device("meta"):
        model = WanDiT(WAN_CONFIGS[size])
    assert dit_params(WAN_CONFIGS[size]) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_estimate_kv_cache_equals_the_real_cache(guidance):
    """A tiny Wan T2V segment (21 latents of 16×4×6, float32): the predicted cache bytes of a planning run and of a
    populating run are the bytes the sampler allocated."""
    model = build_random_model(MICRO, seed=0)
    sampler = SegmentSampler(model, SamplerConfig(steps=1, guidance=guidance))
    gen = torch.Generator().manual_seed(0)
    prompt = Prompt(torch.randn(1, 512, MICRO.text_dim, generator=gen), torch.randn(1, 512, MICRO.text_dim, generator=gen))
    planned = plan_segment(sampler, WAN_T2V, prompt, (16, 4, 6), seed=0, segment=0)
    populated = populate_segment(sampler, WAN_T2V, prompt, planned.result, seed=0, segment=0)
    plan = estimate_memory(MICRO, WAN_T2V, 32, 48, role="plan", guidance=guidance, nbytes=4)
    pop = estimate_memory(MICRO, WAN_T2V, 32, 48, role="populate", guidance=guidance, nbytes=4)
    assert planned.cache_bytes == plan.kv_cache > 0 and populated.cache_bytes == pop.kv_cache
    assert plan.kv_slots == 2 and pop.kv_slots == 15  # frames 13..18 are never cached
    assert cached_frames(WAN_T2V, "populate") == frozenset(range(13)) | {19, 20}
    text = encode_text(model, torch.cat([prompt.positive, prompt.negative][: 2 if guidance != 1 else 1]))
    assert sum(t.numel() * 4 for t in text.keys + text.values) == pop.text_kv


def test_estimate_flops_match_a_flop_counter():
    """One cached forward (the tail chunk: 6 frames seeing 15 cached ones) counted by torch's FlopCounterMode (with
    SDPA's math kernel, whose matmuls the counter sees)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cfg = WAN_CONFIGS["tiny"]
    model = build_random_model(cfg, seed=0)
    tpf, frames, visible = 6, list(range(13, 19)), list(range(13)) + [19, 20]
    cache = FrameKVCache(visible, cfg.num_layers)
    text = encode_text(model, torch.randn(2, 512, cfg.text_dim))
    with torch.no_grad():
        for f in visible:
            wan_forward(model, torch.randn(2, 16, 1, 4, 6), [f], torch.zeros(2), text, cache=cache, write_cache=True)
        counter = FlopCounterMode(display=False)
        with counter, sdpa_kernel(SDPBackend.MATH):
            wan_forward(model, torch.randn(2, 16, 6, 4, 6), frames, torch.full((2,), 500.0), text, cache=cache,
                        visible=visible)
    predicted = step_flops(cfg, len(frames) * tpf, (len(frames) + len(visible)) * tpf, batch=2, frames=len(frames))
    measured = counter.get_total_flops()
    assert abs(predicted - measured) / measured < 0.005, (predicted, measured)


def test_estimate_reference_figures_for_14b():
    cfg, tpf = WAN_CONFIGS["14B"], 1560
    assert kv_cache_bytes(cfg, 15, tpf, batch=1) / GB == pytest.approx(19.17, abs=0.01)  # reference §1.3, per branch
    est = estimate_memory(cfg, WAN_T2V, 480, 832, role="segment")
    assert est.weights / GB == pytest.approx(28.58, abs=0.01) and est.kv_cache == 2 * kv_cache_bytes(cfg, 15, tpf, 1)
    assert est.text_kv == text_context_bytes(cfg)
    assert 2 * GB < est.activations < 6 * GB
    assert est.peak < 80 * GIB  # batched CFG, 15 slots, umT5 offloaded
    resident = estimate_memory(cfg, WAN_T2V, 480, 832, role="segment", offload_text=False)
    assert resident.peak - est.peak == pytest.approx(11.36 * GB, rel=0.01)  # umT5-XXL in bf16 beside the caches


def test_estimate_command(capsys, tmp_path):
    from wan_tiny import build_parts, write_original

    assert main(["estimate", "--model", "random:14B"]) == 0
    out = capsys.readouterr().out
    assert "KV cache" in out and "38.34" in out and "28.58" in out and "fits a 80 GiB device" in out
    assert "tail" in out and "PFLOP" in out
    folder = write_original(tmp_path / "wan", *build_parts(seed=0))
    assert main(["estimate", "--wan", str(folder), "--size", "32", "48", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "original layout" in out and "DiT dim 32, 2 layers, 2 heads" in out
    est = estimate_memory(MICRO, WAN_T2V, 32, 48, role="populate", nbytes=4)
    assert f"{est.kv_cache / GB:>10.2f}" in out
