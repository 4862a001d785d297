"""Where tensors live and in which dtype: the KV cache in CPU memory (bit-identical, really staged), float8 K/V and
weights (within float8 rounding of the 16/32-bit values), block swap (bit-identical to resident weights)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mmpl_core.layout import WAN_T2V
from mmpl_core.model import FrameKVCache, build_random_model, encode_text, get_config, wan_forward
from mmpl_core.model.fp8 import FLOAT8, Float8Linear, dequantize, quantize, store_linear_weights_in_float8
from mmpl_core.model.streaming import BlockSwap, stream_blocks, weight_stream
from mmpl_core.sampling import SamplerConfig
from mmpl_core.segment import Prompt, SegmentSampler, plan_segment, populate_segment
from mmpl_core.text import HashedTextEncoder

MICRO = get_config("micro")
FIVE_LAYERS = MICRO.with_(num_layers=5)  # an odd number of streamed blocks exercises both alternating buffers
FAST = SamplerConfig(solver="unipc", steps=3, shift=5.0, guidance=5.0)
LATENT = (16, 4, 4)


@pytest.fixture(scope="module")
def prompt():
    enc = HashedTextEncoder(dim=MICRO.text_dim, text_len=16)
    return Prompt(enc.encode("a red circle"), enc.encode("blurry"))


def float8_error_bound(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Half a float8 e4m3 step: 2^-4 relative for normal values, 2^-10 · scale below the smallest normal (2^-6)."""
    return torch.maximum(x.abs() * 2.0**-4, scale * 2.0**-10)


def _segment(model, prompt, *, kv_cache="device", kv_dtype="compute", split=False):
    sampler = SegmentSampler(model, FAST, kv_cache=kv_cache)
    planned = plan_segment(sampler, WAN_T2V, prompt, LATENT, seed=2, segment=0, split_cfg=split, kv_dtype=kv_dtype)
    return populate_segment(sampler, WAN_T2V, prompt, planned.result, seed=2, segment=0, split_cfg=split,
                            kv_dtype=kv_dtype)


@pytest.mark.parametrize("kv_dtype,split", [("compute", False), ("compute", True), ("float8_e4m3fn", False)])
def test_kv_cache_in_cpu_memory_gives_identical_latents(prompt, kv_dtype, split, monkeypatch):
    """A whole plan + populate of the Wan T2V layout with the cache in CPU memory equals the on-device cache bit for
    bit, and every read found its layer already staged by the prefetch of the layer before (none copied late)."""
    model = build_random_model(MICRO, seed=3)
    reference = _segment(model, prompt, kv_dtype=kv_dtype, split=split)
    staged_at_read, read = [], FrameKVCache.read

    def spying_read(self, layer, frames):
        if self.placement == "cpu":
            staged_at_read.append(layer in self._staged)
        return read(self, layer, frames)

    monkeypatch.setattr(FrameKVCache, "read", spying_read)
    moved = _segment(model, prompt, kv_cache="cpu", kv_dtype=kv_dtype, split=split)
    assert torch.equal(moved.result.latents, reference.result.latents)
    assert moved.cache_bytes == reference.cache_bytes > 0
    assert staged_at_read and all(staged_at_read)


def test_kv_cache_cpu_placement_reads_through_separate_staging_copies():
    gen = torch.Generator().manual_seed(0)
    k, v = (torch.randn(2, 3 * 4, 2, 8, generator=gen) for _ in range(2))  # [B, 3 frames x 4 tokens, H, D]
    on_device = FrameKVCache([5, 0, 1, 2], 1)
    in_cpu = FrameKVCache([5, 0, 1, 2], 1, placement="cpu", device="cpu")
    for cache in (on_device, in_cpu):
        cache.write(0, [0, 1, 2], k, v)
    for frames in ([0, 1], [2, 0], [1]):
        in_cpu.prefetch(0, frames)
        assert in_cpu._staged[0][0] == tuple(sorted(in_cpu.slot_of[f] for f in frames))
        got, want = in_cpu.read(0, frames), on_device.read(0, frames)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        storage = in_cpu.keys[0].untyped_storage().data_ptr()
        assert got[0].untyped_storage().data_ptr() != storage  # a staged copy, not a view of the storage
        assert 0 not in in_cpu._staged  # consumed
    with pytest.raises(RuntimeError, match=r"frames \[5\] are visible but were never written"):
        in_cpu.read(0, [5, 0])
    with pytest.raises(ValueError, match="placement must be one of"):
        FrameKVCache([0], 1, placement="disk")
    with pytest.raises(ValueError, match="storage dtype must be one of"):
        FrameKVCache([0], 1, storage_dtype="int4")


@pytest.mark.parametrize("placement", ["device", "cpu"])
def test_kv_cache_float8_storage_is_within_float8_rounding(placement):
    gen = torch.Generator().manual_seed(1)
    # per head and frame, magnitudes from 1e-3 to 1e2: each (batch, frame, head) needs its own scale
    magnitude = 10.0 ** torch.linspace(-3, 2, 2 * 3 * 4).reshape(2, 3, 1, 4, 1)
    k = (torch.randn(2, 3, 5, 4, 8, generator=gen) * magnitude).flatten(1, 2)
    v = torch.randn(2, 15, 4, 8, generator=gen)
    cache = FrameKVCache([0, 1, 2], 1, placement=placement, storage_dtype="float8_e4m3fn", device="cpu")
    cache.write(0, [0, 1, 2], k, v)
    assert cache.keys[0].dtype == FLOAT8 and cache.scales[0][0].shape == (2, 3, 4)
    assert cache.nbytes() == 2 * (k.numel() * 1 + 2 * 3 * 4 * 4)  # one byte per value plus float32 scales
    k_read, v_read = cache.read(0, [0, 1, 2])
    assert k_read.dtype == torch.float32
    scale = cache.scales[0][0][:, :, None, :, None].expand(2, 3, 5, 4, 8).flatten(1, 2)
    error = (k_read - k).abs()
    assert (error <= float8_error_bound(k, scale)).all()
    assert error.max() > 0  # really rounded
    amax = k.unflatten(1, (3, 5)).abs().amax(dim=(2, 4))
    assert ((amax / cache.scales[0][0] > 224) & (amax / cache.scales[0][0] <= 448)).all()  # the tightest power of 2
    assert torch.allclose(v_read, v, rtol=2**-4, atol=1e-2)


def test_quantize_uses_power_of_two_scales_and_saturates_nothing():
    x = torch.tensor([[0.0, 0.0], [1e-30, -3.0], [448.0, 447.0]])
    q, scale = quantize(x, (1,))
    assert torch.equal(scale.flatten(), torch.tensor([1.0, 2.0**-7, 1.0]))
    assert torch.equal(dequantize(q, scale, torch.float32)[0], torch.zeros(2))
    assert dequantize(q, scale, torch.float32)[1, 1] == -3.0 and dequantize(q, scale, torch.float32)[2, 0] == 448.0


def _forwards(model, prompt):
    """Text K/V, a cache-writing t=0 pass and a cached denoising forward (plan chunk seeing frames 0, 1)."""
    gen = torch.Generator().manual_seed(4)
    dtype = model.patch_embedding.weight.dtype
    x0, x = (torch.randn(2, 16, n, 4, 4, generator=gen).to(dtype) for n in (2, 7))
    with torch.no_grad():
        text = encode_text(model, torch.cat([prompt.positive, prompt.negative]))
        cache = FrameKVCache([0, 1], len(model.blocks))
        wan_forward(model, x0, (0, 1), torch.zeros(2), text, cache=cache, write_cache=True, return_output=False)
        out = wan_forward(model, x, WAN_T2V.groups[1].frames, torch.full((2,), 700.0), text, cache=cache,
                          visible=(0, 1))
    return text.keys + text.values + cache.keys + cache.values + [out]


@pytest.mark.parametrize("on_device", [0, 2, 4])
def test_block_swap_forward_equals_resident_forward(prompt, on_device):
    resident = build_random_model(FIVE_LAYERS, seed=5)
    swapped = copy.deepcopy(resident)
    swap = stream_blocks(swapped, "cpu", on_device)
    assert isinstance(swap, BlockSwap) and weight_stream(swapped) is swap
    assert len(swap._buffers) == min(2, 5 - on_device)
    before = {k: v.clone() for k, v in swapped.state_dict().items()}
    buffers = {t.untyped_storage().data_ptr() for b in swap._buffers for t in b.values()}
    used = []  # per call of a streamed block's q projection: did its weight live in a device buffer?
    for layer in swap.streamed:
        swapped.blocks[layer].self_attn.q.register_forward_pre_hook(
            lambda m, _: used.append(m.weight.untyped_storage().data_ptr() in buffers))
    for got, want in zip(_forwards(swapped, prompt), _forwards(resident, prompt), strict=True):
        assert torch.equal(got, want)
    assert len(used) == 2 * (5 - on_device) and all(used)  # two forwards
    for layer in swap.streamed:  # after the forward every streamed block points at its own weights again
        assert not {p.untyped_storage().data_ptr() for p in swapped.blocks[layer].parameters()} & buffers
    after = swapped.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    with pytest.raises(ValueError, match=r"blocks on device must lie in 0\.\.5"):
        stream_blocks(copy.deepcopy(resident), "cpu", 6)


def test_every_block_resident_attaches_no_stream():
    model = build_random_model(MICRO, seed=0)
    assert stream_blocks(model, "cpu", len(model.blocks)) is None and weight_stream(model) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float8_weights_are_stored_in_8_bits_and_dequantised_exactly(prompt, dtype):
    full = build_random_model(MICRO, seed=6, dtype=dtype)
    fp8 = store_linear_weights_in_float8(copy.deepcopy(full))
    linears = [m for m in fp8.blocks.modules() if isinstance(m, Float8Linear)]
    assert len(linears) == MICRO.num_layers * 10 and not any(type(m) is nn.Linear for m in fp8.blocks.modules())
    assert type(fp8.head.head) is nn.Linear  # outside the blocks nothing changes
    # ground truth: the original module tree with each weight replaced by its dequantised value
    reference = copy.deepcopy(full)
    for name, module in fp8.blocks.named_modules():
        if isinstance(module, Float8Linear):
            assert module.weight.dtype == FLOAT8 and module.weight.element_size() == 1
            original = full.blocks.get_submodule(name).weight.float()
            restored = module.dequantized_weight(torch.float32)
            assert (restored - original).abs().le(float8_error_bound(original, module.weight_scale)).all()
            reference.blocks.get_submodule(name).weight.data = module.dequantized_weight(dtype)
    prompt = Prompt(prompt.positive.to(dtype), prompt.negative.to(dtype))
    outputs, expected, unquantised = _forwards(fp8, prompt), _forwards(reference, prompt), _forwards(full, prompt)
    for got, want in zip(outputs, expected, strict=True):
        assert torch.equal(got, want)
    relative = (outputs[-1] - unquantised[-1]).norm() / unquantised[-1].norm()
    assert 0 < relative < 0.1, relative  # float8 rounding of every weight, compounded over two blocks


def test_float8_weights_stream_like_any_block(prompt):
    fp8 = store_linear_weights_in_float8(build_random_model(FIVE_LAYERS, seed=7))
    swapped = copy.deepcopy(fp8)
    swap = stream_blocks(swapped, "cpu", 1)
    assert swap._buffers[0]["self_attn.q.weight"].dtype == FLOAT8  # half the bytes of a 16-bit block to move
    for got, want in zip(_forwards(swapped, prompt), _forwards(fp8, prompt), strict=True):
        assert torch.equal(got, want)
