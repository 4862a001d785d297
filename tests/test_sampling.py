"""Sampling: the official Wan2.1 schedule, fresh scheduler state, oracle denoising, per-chunk noise, config checks."""
import numpy as np
import pytest
import torch

from mmpl_core.sampling import (
    SOLVERS,
    WAN_DEFAULT,
    SamplerConfig,
    chunk_noise,
    chunk_seed,
    make_scheduler,
    official_sigmas,
    sample_chunk,
)


def _official_reference(steps=50, shift=5.0):
    """Wan2.1's FlowUniPCMultistepScheduler.set_timesteps, recomputed: (int64 timesteps [steps], sigmas [steps+1])."""
    train_sigmas = torch.from_numpy(1.0 - np.linspace(1, 1 / 1000, 1000)[::-1].copy()).float()
    s = np.linspace(train_sigmas[0].item(), train_sigmas[-1].item(), steps + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return torch.from_numpy(s * 1000).long(), np.concatenate([s, [0.0]]).astype(np.float32)


def test_sampling_wan_default():
    assert WAN_DEFAULT == SamplerConfig("unipc", 50, 5.0, 5.0)
    assert SOLVERS == ("unipc", "euler")


def test_sampling_unipc_schedule_matches_official():
    sched = make_scheduler(WAN_DEFAULT)
    t, sigmas = sched.timesteps, sched.sigmas
    print("unipc timesteps:", t[:4].tolist(), "...", t[-4:].tolist(), "sigmas:", sigmas[:2].tolist(), sigmas[-2:].tolist())
    assert t[:3].tolist() == [999, 995, 991] and t[-4:].tolist() == [302, 241, 172, 92]
    ref_t, ref_sigmas = _official_reference()
    assert torch.equal(t, ref_t)
    np.testing.assert_allclose(sigmas.numpy(), ref_sigmas, rtol=0, atol=1e-7)
    assert len(t) == 50 and len(sigmas) == 51 and sigmas[-1].item() == 0.0
    # diffusers' own flow schedule (set_timesteps(50)) would differ: starts at σ = 1 − 1e-6 and ends at t = 96.


def test_sampling_euler_schedule_same_sigmas():
    sched = make_scheduler(SamplerConfig("euler"))
    _, ref_sigmas = _official_reference()
    np.testing.assert_allclose(sched.sigmas.numpy(), ref_sigmas, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sched.timesteps.numpy(), 1000 * ref_sigmas[:-1], rtol=1e-6)
    assert sched.sigmas[-1].item() == 0.0


@pytest.mark.parametrize("solver", SOLVERS)
def test_sampling_fresh_scheduler_each_call(solver):
    cfg = SamplerConfig(solver, steps=8)
    assert make_scheduler(cfg) is not make_scheduler(cfg)
    noise = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    def vel(x, t):
        return torch.tanh(x) * (t / 1000) + 0.1 * x.roll(1, -1)

    a = sample_chunk(vel, noise, cfg)
    b = sample_chunk(vel, noise, cfg)
    assert torch.equal(a, b)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("steps", [50, 12, 1])
def test_sampling_oracle_velocity_recovers_target(solver, steps):
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 16, 3, 8, 8, generator=g), torch.randn(2, 16, 3, 8, 8, generator=g)
    cfg = SamplerConfig(solver, steps=steps)
    sched = make_scheduler(cfg)
    sigma_of = dict(zip(sched.timesteps.float().tolist(), sched.sigmas.tolist()))
    seen = []

    def oracle(x, t):  # exact velocity toward x0: x_t = (1 − σ)·x0 + σ·ε ⇒ v = ε − x0 = (x_t − x0) / σ
        assert x.shape == noise.shape and t.ndim == 0 and t.dtype == torch.float32 and 0 <= t.item() <= 1000
        return (x - x0) / sigma_of[t.item()]

    out = sample_chunk(oracle, noise, cfg, callback=lambda i, n: seen.append((i, n)))
    assert out.shape == noise.shape and out.dtype == noise.dtype
    assert (out - x0).abs().max().item() < 1e-5
    assert seen == [(i, steps) for i in range(steps)]

    # With σ read back from the timestep: UniPC's timesteps are int64(1000·σ) as in Wan2.1, so t/1000 undershoots σ
    # by < 1/1000 absolute and the recovered sample is off by a few 1e-3; Euler's float timesteps are exact.
    out = sample_chunk(lambda x, t: (x - x0) / (t / 1000), noise, cfg)
    assert (out - x0).abs().max().item() < (1e-2 if solver == "unipc" else 1e-5)


def test_sampling_dtype_roundtrip():
    noise = torch.randn(1, 4, 2, 4, 4).to(torch.bfloat16)
    dtypes = set()
    out = sample_chunk(lambda x, t: dtypes.add(x.dtype) or x * 0, noise, SamplerConfig(steps=3))
    assert out.dtype == torch.bfloat16 and dtypes == {torch.bfloat16}


def test_sampling_chunk_seed_distinct_and_63_bit():
    triples = [(s, g, k) for s in (0, 1, 2**40) for g in range(5) for k in range(5)]
    seeds = [chunk_seed(*tr) for tr in triples]
    assert len(set(seeds)) == len(triples)
    assert all(0 <= s < 2**63 for s in seeds)
    assert chunk_seed(7, 1, 2) == chunk_seed(7, 1, 2) != chunk_seed(7, 2, 1)
    with pytest.raises(ValueError):
        chunk_seed(-1, 0, 0)


def test_sampling_chunk_noise_deterministic_and_distinct():
    shape = (1, 16, 3, 8, 8)
    a = chunk_noise(3, 1, 2, shape)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(a, chunk_noise(3, 1, 2, shape))
    for other in [(4, 1, 2), (3, 2, 2), (3, 1, 3), (3, 2, 1)]:
        assert not torch.allclose(a, chunk_noise(*other, shape))


def test_sampling_chunk_noise_device_and_dtype_independent():
    shape = (2, 16, 2, 8, 8)
    ref = chunk_noise(5, 0, 1, shape)
    assert torch.equal(chunk_noise(5, 0, 1, shape, dtype=torch.bfloat16), ref.to(torch.bfloat16))
    assert chunk_noise(5, 0, 1, shape, device="meta").device.type == "meta"
    if torch.cuda.is_available():
        assert torch.equal(chunk_noise(5, 0, 1, shape, device="cuda").cpu(), ref)


def test_sampling_chunk_noise_is_standard_normal():
    x = chunk_noise(0, 0, 0, (4, 16, 5, 32, 32))
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    assert abs((x.abs() < 1).float().mean().item() - 0.6827) < 0.01


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"solver": "ddim"}, "solver"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"shift": 0.0}, "shift"),
        ({"shift": float("nan")}, "shift"),
        ({"guidance": -1.0}, "guidance"),
    ],
)
def test_sampling_config_validation_names_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplerConfig(**kwargs)


def test_sampling_official_sigmas():
    s = official_sigmas(50)
    assert s.shape == (50,) and abs(s[0] - 0.999) < 1e-7 and abs(s[-1] - 0.999 / 50) < 1e-7
