"""The VAE bridge (4-latent vs the official full-length reference), the naive baseline and colour anchoring.

All on CPU with tiny random Wan-shaped VAEs at an 8×8 latent size (64×64 px).
"""
import pytest
import torch

from mmpl_core.bridge import anchor_colour, bridge_pixel_frames, full_length_bridge, naive_bridge, vae_bridge
from mmpl_core.vae import build_tiny_vae

C, H, W = 16, 8, 8  # latent channels and size: 64×64 px


def _latents(seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(C, H, W, generator=g) * scale, torch.randn(C, 2, H, W, generator=g) * scale


@pytest.fixture(scope="module")
def vaes():
    return {8: build_tiny_vae(base_dim=8, seed=0), 16: build_tiny_vae(base_dim=16, seed=0)}


@pytest.fixture(scope="module")
def short_out(vaes):
    """vae_bridge on the seed-0 latents, once per VAE (the full-length path is the slow one)."""
    first, terminal = _latents()
    return {bd: vae_bridge(vae, first, terminal) for bd, vae in vaes.items()}


def test_bridge_pixel_frames():
    assert bridge_pixel_frames() == 5 and bridge_pixel_frames(1) == 1 and bridge_pixel_frames(3) == 9


@pytest.mark.parametrize("num_frames", [21, 9])
@pytest.mark.parametrize("base_dim", [8, 16])
def test_vae_bridge_matches_full_length_bridge(vaes, short_out, base_dim, num_frames):
    # Measured (torch 2.14.1 CPU, diffusers 0.42.1): max abs diff 0.0 — bitwise equal for base_dim 8 and 16 at
    # num_frames 21, 9, 5 and 4, since both the decoder and the encoder run the same causal chunks in the same order.
    # The tolerance leaves room for other backends/kernels (GPU, bf16 would need a looser one).
    first, terminal = _latents()
    ref = full_length_bridge(vaes[base_dim], first, terminal, num_frames=num_frames)
    out = short_out[base_dim]
    assert out.shape == ref.shape == (C, 2, H, W)
    scale = ref.abs().max().item()
    assert scale > 0.1  # not a degenerate all-zero comparison
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * scale)


def test_vae_bridge_shape_dtype_and_finite(short_out):
    for out in short_out.values():
        assert out.shape == (C, 2, H, W) and out.dtype == torch.float32 and out.device.type == "cpu"
        assert torch.isfinite(out).all() and out.std() > 1e-2
        assert not torch.allclose(out[:, 0], out[:, 1])


def test_vae_bridge_accepts_float64_inputs(vaes, short_out):
    first, terminal = _latents()
    out = vae_bridge(vaes[8], first.double(), terminal.double())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, short_out[8], rtol=1e-4, atol=1e-4)


def test_vae_bridge_depends_on_terminal_latents(vaes, short_out):
    vae, base = vaes[8], short_out[8]
    first, terminal = _latents()
    t1 = terminal.clone()
    t1[:, 1] = torch.randn(C, H, W, generator=torch.Generator().manual_seed(7))  # change f20 only
    out = vae_bridge(vae, first, t1)
    # causal: output latent 0 encodes pixel 8 alone (decoded from f0, f19, f19), so f20 cannot reach it …
    torch.testing.assert_close(out[:, 0], base[:, 0], rtol=0, atol=0)
    # … but latent 1 encodes pixels 9-12, which f20 decodes to. The untrained encoder's latent 1 barely reacts to
    # its own 4 frames (it is dominated by the causal cache from pixel 8): measured max change 3.7e-4 (base_dim 8),
    # vs ~0.1 when f19 changes. The bridge is deterministic (latent 0 above is bitwise equal), so any change far
    # above float rounding shows the dependence.
    assert (out[:, 1] - base[:, 1]).abs().max() > 1e-5

    t0 = terminal.clone()
    t0[:, 0] = torch.randn(C, H, W, generator=torch.Generator().manual_seed(8))  # change f19 only
    out = vae_bridge(vae, first, t0)
    assert (out[:, 0] - base[:, 0]).abs().max() > 1e-2 and (out[:, 1] - base[:, 1]).abs().max() > 1e-2


def test_vae_bridge_does_not_modify_inputs(vaes):
    first, terminal = _latents()
    f, t = first.clone(), terminal.clone()
    vae_bridge(vaes[8], first, terminal)
    assert torch.equal(first, f) and torch.equal(terminal, t)


@pytest.mark.parametrize(
    "first_shape, terminal_shape",
    [
        ((C, H, W), (C, 1, H, W)),  # one terminal latent
        ((C, H, W), (C, 3, H, W)),  # three terminal latents
        ((C, H, W), (C, H, W)),  # terminal without a frame axis
        ((C, 1, H, W), (C, 2, H, W)),  # first with a frame axis
        ((C, H, W), (1, C, 2, H, W)),  # batched
        ((8, H, W), (C, 2, H, W)),  # channel mismatch
    ],
)
@pytest.mark.parametrize("bridge", [vae_bridge, full_length_bridge])
def test_bridges_reject_bad_shapes(vaes, bridge, first_shape, terminal_shape):
    with pytest.raises(ValueError, match=r"bridge needs the first latent \[C, h, w\] and 2 terminal latents"):
        bridge(vaes[8], torch.zeros(first_shape), torch.zeros(terminal_shape))


def test_vae_bridge_rejects_wrong_latent_channels(vaes):
    with pytest.raises(ValueError, match="latents must be"):  # the VAE's own check: 8 ≠ its 16 channels
        vae_bridge(vaes[8], torch.zeros(8, H, W), torch.zeros(8, 2, H, W))


def test_vae_bridge_rejects_spatial_mismatch(vaes):
    with pytest.raises(ValueError, match="bridge needs"):
        vae_bridge(vaes[8], torch.zeros(C, H, W), torch.zeros(C, 2, H // 2, W))


def test_naive_bridge_returns_a_copy():
    _, terminal = _latents(seed=3)
    out = naive_bridge(terminal)
    assert out.shape == terminal.shape and out.dtype == torch.float32
    assert torch.equal(out, terminal)
    assert out.data_ptr() != terminal.data_ptr()
    before = terminal.clone()
    out.add_(1.0)  # writing the result leaves the input alone
    assert torch.equal(terminal, before)


def test_naive_bridge_casts_to_float32_cpu():
    _, terminal = _latents(seed=3)
    out = naive_bridge(terminal.double())
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out, terminal)


@pytest.mark.parametrize("shape", [(C, 1, H, W), (C, 3, H, W), (C, H, W), (1, C, 2, H, W)])
def test_naive_bridge_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"naive bridge needs terminal latents \[C, 2, h, w\]"):
        naive_bridge(torch.zeros(shape))


def _channel_stats(x):
    return x.mean((1, 2, 3)), x.std((1, 2, 3))


@pytest.fixture
def colour_pair():
    g = torch.Generator().manual_seed(11)
    shift = torch.randn(C, 1, 1, 1, generator=g) * 2
    gain = torch.rand(C, 1, 1, 1, generator=g) * 2 + 0.2
    context = torch.randn(C, 2, H, W, generator=g)
    reference = torch.randn(C, 5, H, W, generator=g) * gain + shift  # different frame count and statistics
    return context, reference


def test_anchor_colour_strength_zero_is_identity(colour_pair):
    context, reference = colour_pair
    out = anchor_colour(context, reference, 0.0)
    assert torch.equal(out, context)


def test_anchor_colour_strength_one_matches_reference_stats(colour_pair):
    context, reference = colour_pair
    out = anchor_colour(context, reference, 1.0)
    assert out.shape == context.shape
    mean, std = _channel_stats(out)
    ref_mean, ref_std = _channel_stats(reference)
    torch.testing.assert_close(mean, ref_mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(std, ref_std, rtol=1e-5, atol=1e-6)
    # an affine map per channel: the normalised content is unchanged
    c_mean, c_std = _channel_stats(context)
    torch.testing.assert_close((out - ref_mean.view(-1, 1, 1, 1)) / ref_std.view(-1, 1, 1, 1),
                               (context - c_mean.view(-1, 1, 1, 1)) / c_std.view(-1, 1, 1, 1), rtol=1e-4, atol=1e-4)


def test_anchor_colour_half_strength_lies_between(colour_pair):
    context, reference = colour_pair
    mean, std = _channel_stats(anchor_colour(context, reference, 0.5))
    c_mean, c_std = _channel_stats(context)
    ref_mean, ref_std = _channel_stats(reference)
    lo, hi = torch.minimum(c_mean, ref_mean), torch.maximum(c_mean, ref_mean)
    assert ((mean >= lo - 1e-5) & (mean <= hi + 1e-5)).all()
    lo, hi = torch.minimum(c_std, ref_std), torch.maximum(c_std, ref_std)
    assert ((std >= lo - 1e-5) & (std <= hi + 1e-5)).all()
    # lerp of a per-channel affine map: both statistics land exactly halfway
    torch.testing.assert_close(mean, (c_mean + ref_mean) / 2, rtol=0, atol=1e-5)
    torch.testing.assert_close(std, (c_std + ref_std) / 2, rtol=1e-5, atol=1e-6)


def test_anchor_colour_does_not_modify_inputs(colour_pair):
    context, reference = colour_pair
    c, r = context.clone(), reference.clone()
    anchor_colour(context, reference, 0.7)
    assert torch.equal(context, c) and torch.equal(reference, r)
