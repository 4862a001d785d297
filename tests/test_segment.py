"""One segment end to end: micro planning, content populating, KV cache, determinism, decode."""
import pytest
import torch

from mmpl_core.layout import WAN_I2V, WAN_T2V, mmpl_layout
from mmpl_core.model import FrameKVCache, build_random_model, encode_text, get_config, wan_forward
from mmpl_core.pipeline import MMPLPipeline
from mmpl_core.plan import GenerationSettings
from mmpl_core.sampling import SamplerConfig
from mmpl_core.segment import Prompt, SegmentSampler, plan_segment, populate_segment
from mmpl_core.text import HashedTextEncoder
from mmpl_core.vae import build_tiny_vae

FAST = SamplerConfig(solver="unipc", steps=4, shift=5.0, guidance=5.0)
LATENT = (16, 4, 4)  # 2×2 tokens per frame


@pytest.fixture(scope="module")
def micro():
    return build_random_model(get_config("micro"), seed=7)


@pytest.fixture(scope="module")
def prompt():
    enc = HashedTextEncoder(dim=get_config("micro").text_dim, text_len=16)
    return Prompt(enc.encode("a red circle"), enc.encode("blurry"))


def _plan_and_populate(model, prompt, layout=WAN_T2V, seed=1, segment=0, sampler=FAST):
    runner = SegmentSampler(model, sampler)
    planned = plan_segment(runner, layout, prompt, LATENT, seed=seed, segment=segment)
    full = populate_segment(runner, layout, prompt, planned.result, seed=seed, segment=segment)
    return planned, full


def test_segment_plan_then_populate_writes_every_frame(micro, prompt):
    planned, full = _plan_and_populate(micro, prompt)
    plan_latents = planned.result
    assert plan_latents.known == frozenset(WAN_T2V.keyframes)
    others = [f for f in range(21) if f not in WAN_T2V.keyframes]
    assert torch.isnan(plan_latents.latents[:, others]).all()  # the buffer starts poisoned
    assert torch.isfinite(plan_latents.latents[:, list(WAN_T2V.keyframes)]).all()
    assert full.result.known == frozenset(range(21))
    assert full.result.latents.shape == (16, 21, 4, 4)
    assert torch.isfinite(full.result.latents).all()
    # populating never rewrites the plan
    assert torch.equal(full.result.latents[:, list(WAN_T2V.keyframes)], plan_latents.latents[:, list(WAN_T2V.keyframes)])
    assert [t.name for t in planned.timings if t.denoised] == ["initial", "plan"]
    assert [t.name for t in full.timings if t.denoised] == ["head", "tail"]


def test_segment_is_bitwise_deterministic_and_seeded(micro, prompt):
    _, a = _plan_and_populate(micro, prompt, seed=3)
    _, b = _plan_and_populate(micro, prompt, seed=3)
    _, c = _plan_and_populate(micro, prompt, seed=4)
    _, d = _plan_and_populate(micro, prompt, seed=3, segment=1)
    assert torch.equal(a.result.latents, b.result.latents)
    assert not torch.allclose(a.result.latents, c.result.latents)
    assert not torch.allclose(a.result.latents, d.result.latents)


def test_segment_populating_elsewhere_gives_identical_result(micro, prompt):
    """A plan populated by another sampler instance (another model copy), group by group, equals one run."""
    _, reference = _plan_and_populate(micro, prompt, seed=5)
    planned = plan_segment(SegmentSampler(micro, FAST), WAN_T2V, prompt, LATENT, seed=5, segment=0)
    other = build_random_model(get_config("micro"), seed=7)
    runner = SegmentSampler(other, FAST)
    head_only = runner.run(WAN_T2V, planned.result, [2], prompt, seed=5, segment=0)
    resumed = populate_segment(runner, WAN_T2V, prompt, head_only.result, seed=5, segment=0)
    assert [t.name for t in resumed.timings if t.denoised] == ["tail"]
    assert torch.equal(resumed.result.latents, reference.result.latents)


def test_segment_context_frames_are_kept(micro, prompt):
    context = torch.randn(16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    runner = SegmentSampler(micro, FAST)
    planned = plan_segment(runner, WAN_T2V, prompt, LATENT, seed=0, segment=1, context=context)
    assert [t.name for t in planned.timings if t.denoised] == ["plan"]
    assert torch.equal(planned.result.latents[:, :2], context)
    image = context[:, :1]
    i2v = plan_segment(runner, WAN_I2V, prompt, LATENT, seed=0, segment=0, context=image)
    assert [t.name for t in i2v.timings if t.denoised] == ["initial", "plan"]
    assert torch.equal(i2v.result.latents[:, :1], image)
    with pytest.raises(ValueError, match="context has 3 latent frames"):
        plan_segment(runner, WAN_T2V, prompt, LATENT, seed=0, segment=1, context=torch.zeros(16, 3, 4, 4))


def test_segment_rejects_groups_that_are_known(micro, prompt):
    planned, _ = _plan_and_populate(micro, prompt)
    with pytest.raises(ValueError, match="already known"):
        SegmentSampler(micro, FAST).run(WAN_T2V, planned.result, [1], prompt, seed=1, segment=0)


def test_segment_cfg_batch2_equals_two_branches(micro, prompt):
    """One batch-2 forward over a shared batch-2 cache == separate conditional and unconditional forwards."""
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    q = torch.randn(1, 16, 7, 4, 4, generator=torch.Generator().manual_seed(2))
    plan = WAN_T2V.groups[1]
    both = encode_text(micro, torch.cat([prompt.positive, prompt.negative]))
    outs = []
    for text, xx, qq in [(both, x.expand(2, -1, -1, -1, -1), q.expand(2, -1, -1, -1, -1)),
                         (encode_text(micro, prompt.positive), x, q), (encode_text(micro, prompt.negative), x, q)]:
        cache = FrameKVCache([0, 1], len(micro.blocks))
        with torch.no_grad():
            wan_forward(micro, xx, (0, 1), torch.zeros(1), text, cache=cache, write_cache=True)
            outs.append(wan_forward(micro, qq, plan.frames, torch.tensor([800.0]), text, cache=cache, visible=(0, 1)))
    batched, cond, uncond = outs
    torch.testing.assert_close(batched[0:1], cond, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched[1:2], uncond, rtol=1e-5, atol=1e-6)


def test_segment_without_guidance_uses_one_branch(micro, prompt):
    runner = SegmentSampler(micro, SamplerConfig(steps=2, guidance=1.0))
    assert runner.text_context(Prompt(prompt.positive)).batch == 1
    planned = plan_segment(runner, mmpl_layout(9), Prompt(prompt.positive), LATENT, seed=0, segment=0)
    assert planned.result.known == frozenset(mmpl_layout(9).keyframes)


def test_segment_end_to_end_decodes_video():
    model = build_random_model(get_config("tiny"), seed=0)
    pipe = MMPLPipeline(model, build_tiny_vae(8, seed=0), mmpl_layout(9), HashedTextEncoder())
    settings = GenerationSettings(seed=0, height=32, width=32, sampler=SamplerConfig(steps=2, guidance=3.0))
    out = pipe.generate_segment("a yellow square", settings)
    assert out.video.shape == (3, 33, 32, 32)
    assert out.video.abs().max() <= 1.0 and torch.isfinite(out.video).all()
    assert out.latents.latents.shape == (16, 9, 4, 4)
    again = pipe.generate_segment("a yellow square", settings)
    assert torch.equal(out.video, again.video)
    with pytest.raises(ValueError, match="multiples of 16"):
        GenerationSettings(height=30, width=32)
