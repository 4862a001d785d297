"""Long videos: macro chain, stitching, I2V, per-segment prompts, plan operations, re-plan-from-k, resume."""
import pytest
import torch

from mmpl_core.layout import mmpl_layout
from mmpl_core.model import build_random_model, get_config
from mmpl_core.pipeline import MMPLPipeline
from mmpl_core.plan import GenerationSettings
from mmpl_core.sampling import SamplerConfig
from mmpl_core.stitch import overlap_pixel_frames, stitched_frame_count
from mmpl_core.text import HashedTextEncoder
from mmpl_core.vae import build_tiny_vae

SETTINGS = GenerationSettings(seed=1, height=32, width=32, sampler=SamplerConfig(steps=2, guidance=2.0))


def make_pipe(layout=None):
    model = build_random_model(get_config("micro"), seed=0)
    return MMPLPipeline(model, build_tiny_vae(8, seed=0), layout or mmpl_layout(9),
                        HashedTextEncoder(dim=32, text_len=8), negative_prompt="blur")


@pytest.fixture(scope="module")
def pipe():
    return make_pipe()


@pytest.fixture(scope="module")
def planned(pipe):
    return pipe.plan(pipe.new_plan(["a red circle"], 3, SETTINGS))


@pytest.fixture(scope="module")
def populated(pipe, planned):
    return pipe.populate(planned)


def test_chain_plans_every_segment_without_populating(planned):
    assert planned.statuses() == ["planned"] * 3
    keyframes = list(planned.layout.keyframes)
    for seg in planned.segments:
        assert torch.isfinite(seg.latents.latents[:, keyframes]).all()


def test_chain_next_segment_starts_from_bridged_terminal_frames(pipe, planned):
    from mmpl_core.bridge import vae_bridge

    for k in (1, 2):
        prev = planned.segments[k - 1].latents.latents
        expected = vae_bridge(pipe.vae, prev[:, 0], prev[:, list(planned.layout.terminal)])
        assert torch.equal(planned.segments[k].latents.latents[:, :2], expected)


def test_chain_naive_bridge_reuses_terminal_latents(pipe):
    plan = pipe.plan(pipe.new_plan(["x"], 2, GenerationSettings(**{**SETTINGS.__dict__, "bridge": "naive"})))
    terminal = plan.segments[0].latents.latents[:, list(plan.layout.terminal)]
    assert torch.equal(plan.segments[1].latents.latents[:, :2], terminal)


def test_stitching_frame_count_and_no_duplicated_joins(pipe, populated):
    video = pipe.decode(populated)
    layout = populated.layout
    per_segment = 1 + 4 * (layout.num_frames - 1)
    assert video.shape == (3, stitched_frame_count(layout, 3), 32, 32)
    assert video.shape[1] == per_segment + (per_segment - 5) * 2  # 81 + 76·(S−1) for Wan's 21 latents
    assert stitched_frame_count(mmpl_layout(21), 12) == 81 + 76 * 11
    assert overlap_pixel_frames(layout) == 5
    # segment 1 is kept whole; later segments contribute only their new frames
    segs = [pipe.vae.decode(s.latents.latents[None])[0] for s in populated.segments]
    assert torch.equal(video[:, :per_segment], segs[0])
    assert torch.equal(video[:, per_segment : 2 * per_segment - 5], segs[1][:, 5:])
    # no frame at a join is a copy of its predecessor
    diffs = (video[:, 1:] - video[:, :-1]).abs().amax(dim=(0, 2, 3))
    assert (diffs > 0).all()


def test_i2v_keeps_the_input_image_as_first_frame():
    pipe = make_pipe(mmpl_layout(9, image_to_video=True))
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plan = pipe.populate(pipe.plan(pipe.new_plan(["a dog"], 2, SETTINGS, image=image)))
    latent0 = pipe.vae.encode(image[None, :, None])[0, :, 0]
    assert torch.equal(plan.segments[0].latents.latents[:, 0], latent0)
    video = pipe.decode(plan)
    reconstruction = pipe.vae.decode(latent0[None, :, None])[0, :, 0]
    assert torch.allclose(video[:, 0], reconstruction, atol=1e-5)  # frame 0 is the image (through the VAE)
    assert video.shape[1] == stitched_frame_count(plan.layout, 2)
    with pytest.raises(ValueError, match="must be"):
        pipe.new_plan(["a dog"], 2, SETTINGS, image=torch.zeros(3, 16, 32))
    with pytest.raises(ValueError, match="needs an input image"):
        pipe.new_plan(["a dog"], 2, SETTINGS)


def test_per_segment_prompts_condition_their_own_segments(pipe, planned):
    prompts = ["a red circle", "a blue square", "a green star"]
    plan = pipe.plan(pipe.new_plan(prompts, 3, SETTINGS))
    assert [s.prompt for s in plan.segments] == prompts
    assert _same(plan.segments[0], planned.segments[0])  # same first prompt, same seed: same segment
    assert not torch.allclose(plan.segments[1].latents.latents[:, 2:], planned.segments[1].latents.latents[:, 2:],
                              equal_nan=True)
    with pytest.raises(ValueError, match="one per segment"):
        pipe.new_plan(["a", "b"], 3, SETTINGS)


def _same(a, b):
    return torch.equal(torch.nan_to_num(a.latents.latents, 123.0), torch.nan_to_num(b.latents.latents, 123.0))


def test_replan_from_k_keeps_earlier_segments_bit_identical(pipe, populated):
    changed = populated.reroll(1, seed=99)
    replanned = pipe.plan(changed, start=1)
    assert replanned.segments[0] == populated.segments[0]  # same object: untouched
    assert _same(replanned.segments[0], populated.segments[0])
    assert replanned.statuses() == ["populated", "planned", "planned"]
    for k in (1, 2):
        assert not torch.equal(replanned.segments[k].latents.latents[:, 2:3], populated.segments[k].latents.latents[:, 2:3])


def test_replan_with_nothing_changed_keeps_populated_frames(pipe, populated):
    again = pipe.plan(populated, start=0)
    assert again.statuses() == ["populated"] * 3
    assert all(_same(a, b) for a, b in zip(again.segments, populated.segments))


def test_keyframe_edit_locks_segment_and_replans_after_it(pipe, planned):
    new_latent = torch.zeros(16, 4, 4)
    edited = planned.with_keyframe(0, 8, new_latent)
    assert edited.segments[0].locked and torch.equal(edited.segments[0].latents.latents[:, 8], new_latent)
    replanned = pipe.plan(edited, start=1)
    assert _same(replanned.segments[0], edited.segments[0])
    assert not torch.equal(replanned.segments[1].latents.latents[:, :2], planned.segments[1].latents.latents[:, :2])
    with pytest.raises(ValueError, match="not a keyframe"):
        planned.with_keyframe(0, 3, new_latent)
    with pytest.raises(ValueError, match="shape"):
        planned.with_keyframe(0, 8, torch.zeros(16, 8, 8))


def test_locked_segment_keeps_its_plan_under_a_new_context(pipe, planned):
    plan = planned.lock(1).reroll(0, seed=5)
    replanned = pipe.plan(plan, start=0)
    keyframes = [f for f in planned.layout.keyframes if f >= planned.layout.context_frames]
    assert torch.equal(replanned.segments[1].latents.latents[:, keyframes], planned.segments[1].latents.latents[:, keyframes])
    assert not torch.equal(replanned.segments[1].latents.latents[:, :2], planned.segments[1].latents.latents[:, :2])


def test_populate_resumes_after_an_interrupt(pipe, planned, populated):
    saved = {}
    steps = {"n": 0}
    per_segment = pipe.steps_per_segment(planned, "populate")

    def interrupt_in_second_segment():
        steps["n"] += 1
        if steps["n"] == per_segment + 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe.populate(planned, on_step=interrupt_in_second_segment, on_segment=lambda k, p: saved.update(plan=p))
    partial = saved["plan"]
    assert partial.statuses() == ["populated", "planned", "planned"]
    resumed = pipe.populate(partial)
    assert all(_same(a, b) for a, b in zip(resumed.segments, populated.segments))


def test_populate_selected_segments_and_errors(pipe, planned, populated):
    some = pipe.populate(planned, segments=[2])
    assert some.statuses() == ["planned", "planned", "populated"]
    assert _same(some.segments[2], populated.segments[2])  # populating order does not matter
    with pytest.raises(ValueError, match="not planned"):
        pipe.populate(pipe.new_plan(["a"], 1, SETTINGS))
    with pytest.raises(ValueError, match="not populated"):
        pipe.decode(planned)
    other = make_pipe()
    other.fingerprint = "different"
    with pytest.raises(ValueError, match="another model"):
        other.populate(planned)


def test_colour_anchor_and_boundary_options_change_results(pipe, planned, populated):
    anchored = pipe.plan(pipe.new_plan(["a red circle"], 3, GenerationSettings(**{**SETTINGS.__dict__, "color_anchor": 1.0})))
    assert _same(anchored.segments[0], planned.segments[0])  # segment 1 is the reference, untouched
    ctx = anchored.segments[1].latents.latents[:, :2]
    ref = anchored.segments[0].latents.latents[:, list(planned.layout.keyframes)]
    torch.testing.assert_close(ctx.mean((1, 2, 3)), ref.mean((1, 2, 3)), atol=1e-4, rtol=1e-4)
    boundary = GenerationSettings(**{**SETTINGS.__dict__, "boundary_weight": 0.5})
    plan_b = pipe.new_plan(["a red circle"], 1, boundary)
    plan_b = pipe.populate(pipe.plan(plan_b))
    keyframes = list(planned.layout.keyframes)
    assert torch.equal(plan_b.segments[0].latents.latents[:, keyframes], planned.segments[0].latents.latents[:, keyframes])
    assert not torch.equal(plan_b.segments[0].latents.latents, populated.segments[0].latents.latents)
