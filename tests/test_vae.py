"""Wan VAE wrapper: shapes, normalisation against the raw diffusers VAE, causality, loading."""
import pytest
import torch
from safetensors.torch import save_file

from mmpl_core.vae import WanVAE, build_tiny_vae, load_wan_vae

WAN21_MEAN0, WAN21_STD0 = -0.7571, 2.8184  # first of Wan2.1's 16 channel constants


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_vae(base_dim=8, seed=0)


def _video(t=9, h=32, w=32, seed=0):
    return torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _latents(f=3, h=4, w=4, seed=0):
    return torch.randn(1, 16, f, h, w, generator=torch.Generator().manual_seed(seed))


def test_vae_tiny_is_seeded_and_finite(tiny):
    assert tiny.device.type == "cpu" and tiny.dtype == torch.float32 and not tiny.vae.training
    assert tiny.mean[0, 0].item() == pytest.approx(WAN21_MEAN0) and tiny.std[0, 0].item() == pytest.approx(WAN21_STD0)
    state = torch.random.get_rng_state()
    again = build_tiny_vae(base_dim=8, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    a, b = tiny.vae.state_dict(), again.vae.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = build_tiny_vae(base_dim=8, seed=1).vae.state_dict()
    assert not torch.equal(a["encoder.conv_in.weight"], other["encoder.conv_in.weight"])


@pytest.mark.parametrize("frames, latent_frames", [(1, 1), (5, 2), (13, 4)])
def test_vae_shapes(tiny, frames, latent_frames):
    z = tiny.encode(_video(frames, 32, 48))
    assert z.shape == (1, 16, latent_frames, 4, 6) and z.dtype == torch.float32 and torch.isfinite(z).all()
    x = tiny.decode(z)
    assert x.shape == (1, 3, frames, 32, 48) and torch.isfinite(x).all()
    assert x.abs().max() <= 1 and x.std() > 1e-3  # untrained, but neither dead nor saturated


def test_vae_rejects_bad_shapes(tiny):
    with pytest.raises(ValueError, match="T = 1 \\+ 4k"):
        tiny.encode(_video(4))
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny.encode(_video(5, 30, 32))
    with pytest.raises(ValueError):
        tiny.decode(torch.zeros(1, 8, 2, 4, 4))


def test_vae_normalisation_matches_raw_diffusers(tiny):
    mean, std = torch.tensor(tiny.vae.config.latents_mean), torch.tensor(tiny.vae.config.latents_std)
    mean, std = mean.view(1, 16, 1, 1, 1), std.view(1, 16, 1, 1, 1)
    video = _video(5)
    with torch.no_grad():
        raw_mu = tiny.vae.encode(video).latent_dist.mean  # posterior mean, as Wan does
        torch.testing.assert_close(tiny.encode(video), (raw_mu - mean) / std)
        z = _latents(2)
        torch.testing.assert_close(tiny.decode(z), tiny.vae.decode(z * std + mean).sample)
    torch.testing.assert_close(tiny.denormalize(tiny.normalize(raw_mu)), raw_mu)


def test_vae_custom_constants(tiny):
    plain = WanVAE(tiny.vae, latents_mean=[0.0] * 16, latents_std=[1.0] * 16)
    z = _latents(2)
    with torch.no_grad():
        torch.testing.assert_close(plain.decode(z), tiny.vae.decode(z).sample)
    with pytest.raises(ValueError, match="16 channels"):
        WanVAE(tiny.vae, latents_mean=[0.0] * 4)


def test_vae_decode_is_causal(tiny):
    """Decoding [z0..z3] gives the first 13 frames of decoding [z0..z6]: later latents never change earlier frames."""
    z = _latents(7)
    full, prefix = tiny.decode(z), tiny.decode(z[:, :, :4])
    assert full.shape[2] == 25 and prefix.shape[2] == 13
    assert (full[:, :, :13] - prefix).abs().max().item() < 1e-5


def test_vae_encode_is_causal(tiny):
    video = _video(13)
    full, prefix = tiny.encode(video), tiny.encode(video[:, :, :5])
    assert (full[:, :, :2] - prefix).abs().max().item() < 1e-5


def test_vae_load_diffusers_folder_roundtrip(tiny, tmp_path):
    tiny.vae.save_pretrained(tmp_path / "vae")
    loaded = load_wan_vae(str(tmp_path / "vae"))
    z = _latents(2)
    assert torch.equal(loaded.decode(z), tiny.decode(z))
    # a pipeline folder holding vae/ works too
    assert torch.equal(load_wan_vae(str(tmp_path)).decode(z), tiny.decode(z))


@pytest.mark.parametrize("name", ["vae.safetensors", "vae.pth"])
def test_vae_load_single_file(tiny, tmp_path, name):
    path = tmp_path / name
    sd = {k: v.contiguous() for k, v in tiny.vae.state_dict().items()}
    save_file(sd, path) if name.endswith(".safetensors") else torch.save(sd, path)
    loaded = load_wan_vae(str(path), dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16 and loaded.vae.config.base_dim == 8
    z = _latents(2)
    torch.testing.assert_close(loaded.decode(z), tiny.decode(z), atol=0.1, rtol=0)


def test_vae_load_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_wan_vae(str(missing))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_wan_vae(str(junk))
    not_vae = tmp_path / "other.safetensors"
    save_file({"foo": torch.zeros(2)}, not_vae)
    with pytest.raises(ValueError, match="other.safetensors"):
        load_wan_vae(str(not_vae))
    with pytest.raises(ValueError, match=str(tmp_path.name)):
        load_wan_vae(str(tmp_path))  # a folder without config.json
