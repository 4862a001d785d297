"""Planned loops, keyframe targets (replacement sampling), the Appendix F noise init forms, stitching of loops and
join correction, against ground truth: held frames exactly as given, the bridge's own inverse, injected defects."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from mmpl_core.bridge import reverse_bridge
from mmpl_core.chain import segment_targets
from mmpl_core.layout import get_layout, mmpl_layout
from mmpl_core.model import build_random_model, get_config
from mmpl_core.noise_init import initial_noise
from mmpl_core.pipeline import MMPLPipeline
from mmpl_core.plan import GenerationSettings, KeyframeTarget, Plan
from mmpl_core.plan_store import PlanFileError, load_plan, save_plan
from mmpl_core.sampling import SamplerConfig, chunk_noise
from mmpl_core.schedule import Engine, InProcessPool, run_plan
from mmpl_core.stitch import kept_pixel_frames, overlap_pixel_frames, stitch, stitched_frame_count
from mmpl_core.text import HashedTextEncoder
from mmpl_core.vae import build_tiny_vae

SETTINGS = GenerationSettings(seed=1, height=32, width=32, sampler=SamplerConfig(steps=2, guidance=2.0))
DEMO_PROMPT = "two objects: a red circle and a yellow square bounce over a navy to black gradient"


@pytest.fixture(scope="module")
def micro():
    model = build_random_model(get_config("micro"), seed=0)
    return MMPLPipeline(model, build_tiny_vae(8, seed=0), mmpl_layout(9), HashedTextEncoder(dim=32, text_len=8),
                        negative_prompt="blur")


@pytest.fixture(scope="module")
def demo():
    from mmpl_core.demo import load_demo_pipeline

    torch.set_num_threads(1)
    pipe, bundle = load_demo_pipeline("mmpl")
    settings = GenerationSettings(seed=0, height=bundle.size, width=bundle.size,
                                  sampler=SamplerConfig(steps=8, shift=bundle.shift, guidance=bundle.guidance))
    return pipe, settings


def _scene_image(seed: int) -> torch.Tensor:
    from mmpl_core.data.synthetic import render, sample_scene

    return render(sample_scene(seed), 1, 64, 64)[:, 0]


# --- keyframe targets -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["terminal", "mid"])
def test_held_keyframe_comes_out_exactly_and_its_neighbour_moves_toward_it(demo, role):
    from mmpl_core.keyframes import encode_keyframe_image, target_frame

    pipe, settings = demo
    free = pipe.plan(pipe.new_plan([DEMO_PROMPT], 3, settings))
    frame = target_frame(pipe.layout, role)
    assert frame == {"terminal": 12, "mid": 7}[role]
    target = encode_keyframe_image(pipe.vae, _scene_image(7), frame)
    held = pipe.plan(free.with_target(1, KeyframeTarget(frame, target, label="scene.png")), start=1)
    got, ref = held.segments[1].latents.latents, free.segments[1].latents.latents
    assert torch.equal(got[:, frame], target)  # exactly as given
    neighbour = frame - 1  # 11 (the other terminal keyframe) or 6 (the other mid keyframe)
    assert not torch.equal(got[:, neighbour], ref[:, neighbour])
    assert (got[:, neighbour] - target).norm() < (ref[:, neighbour] - target).norm()  # closer to it than unheld
    assert held.first_difference(free) == 1  # segment 1 re-planned, segment 0 bit-identical
    if role == "terminal":  # the next segment follows the new terminal keyframes
        assert not torch.equal(held.segments[2].latents.latents[:, :2], free.segments[2].latents.latents[:, :2])


def test_target_from_an_earlier_segment_is_read_when_planning(micro):
    plan = micro.plan(micro.new_plan(["a"], 3, SETTINGS))
    given = plan.with_target(2, KeyframeTarget(8, source=(0, 4), label="S1 mid"))
    replanned = micro.plan(given, start=given.replan_start())
    assert given.replan_start() == 2
    assert torch.equal(replanned.segments[2].latents.latents[:, 8], plan.segments[0].latents.latents[:, 4])
    assert segment_targets(replanned, 2, micro.vae).keys() == {8}


def test_bad_targets_are_refused_naming_frame_segment_and_what_is_allowed(micro):
    plan = micro.new_plan(["a"], 2, SETTINGS)
    latent = torch.zeros(16, 4, 4)
    with pytest.raises(ValueError, match=r"frame 1 cannot be given as a target; layout mmpl-t2v-9 plans "
                                         r"frames \[2, 4, 7, 8\]"):
        plan.with_target(1, KeyframeTarget(1, latent))
    with pytest.raises(ValueError, match=r"target latent must have shape \(16, 4, 4\), got \(16, 8, 8\)"):
        plan.with_target(1, KeyframeTarget(8, torch.zeros(16, 8, 8)))
    with pytest.raises(ValueError, match=r"a target of segment 0 can be a keyframe .* of an earlier segment"):
        plan.with_target(0, KeyframeTarget(8, source=(1, 4)))
    with pytest.raises(ValueError, match="either a latent or a source"):
        KeyframeTarget(8, latent, source=(0, 4))
    loop = micro.new_plan(["a"], 2, dataclasses.replace(SETTINGS, loop=True))
    with pytest.raises(ValueError, match="frame 8 of the last segment is held to the loop's start"):
        loop.with_target(1, KeyframeTarget(8, latent))
    with pytest.raises(ValueError, match="a loop needs at least 2 segments"):
        micro.new_plan(["a"], 1, dataclasses.replace(SETTINGS, loop=True))


# --- loops ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bridge", ["vae", "naive"])
def test_loop_last_segment_hands_off_to_the_first_segments_start(micro, bridge):
    settings = dataclasses.replace(SETTINGS, loop=True, bridge=bridge)
    plan = micro.populate(micro.plan(micro.new_plan(["a"], 3, settings)))
    first, last = plan.segments[0].latents.latents, plan.segments[2].latents.latents
    start = first[:, :2]
    expected = reverse_bridge(micro.vae, start) if bridge == "vae" else start
    assert torch.equal(last[:, list(plan.layout.terminal)], expected)
    # the scheduler's task graph (what `mmpl generate` runs) plans the same loop
    scheduled = run_plan(micro.new_plan(["a"], 3, settings), InProcessPool(Engine(micro), threads=1),
                         micro.prompt_fn(settings.sampler)).plan
    assert scheduled.changed_segments(plan) == []


def test_reverse_bridge_is_the_bridges_inverse_on_a_segment_start(demo):
    from mmpl_core.bridge import vae_bridge

    pipe, settings = demo
    start = pipe.plan(pipe.new_plan([DEMO_PROMPT], 1, settings)).segments[0].latents.latents[:, :2]
    terminal = reverse_bridge(pipe.vae, start)
    back = vae_bridge(pipe.vae, torch.zeros_like(start[:, 0]), terminal)
    pixels = lambda z: pipe.vae.decode(z[None])[0]  # noqa: E731
    # the start's 5 pixel frames come back to within the codec's own reconstruction error
    assert (pixels(back) - pixels(start)).abs().mean() < 0.06


def test_loop_stitching_drops_the_repeat_and_has_the_right_frame_count(micro):
    plan = micro.populate(micro.plan(micro.new_plan(["a"], 3, dataclasses.replace(SETTINGS, loop=True))))
    layout, overlap = plan.layout, overlap_pixel_frames(plan.layout)
    video = micro.decode(plan)
    kept = kept_pixel_frames(layout)
    assert video.shape[1] == stitched_frame_count(layout, 3, loop=True) == 3 * (kept - overlap)
    segments = [micro.vae.decode(s.latents.latents[None])[0] for s in plan.segments]
    assert torch.equal(video[:, :kept], segments[0])
    assert torch.equal(video[:, -(kept - 2 * overlap):], segments[2][:, overlap:kept - overlap])
    # no repeated frame anywhere, the way back from the last frame to the first included
    looped = torch.cat([video, video[:, :1]], dim=1)
    assert ((looped[:, 1:] - looped[:, :-1]).abs().amax(dim=(0, 2, 3)) > 0).all()


def test_loop_seam_on_the_demo_stays_within_the_within_segment_difference(demo):
    from mmpl_core.joins import join_report
    from mmpl_core.video_io import to_uint8_frames

    pipe, settings = demo
    plan = pipe.populate(pipe.plan(pipe.new_plan([DEMO_PROMPT], 2, dataclasses.replace(settings, loop=True))))
    video = to_uint8_frames(pipe.decode(plan))
    scores = join_report(video, plan.layout, 2, loop=True)
    assert [(s.before, s.after, s.frame) for s in scores] == [(0, 1, 49), (1, 0, 0)]
    assert scores[-1].seam <= 1.5  # the goal: the loop's join within 1.5x the within-segment difference


# --- stitching: join correction ---------------------------------------------------------------------------------------
def _ramp_segments(layout, count, offsets):
    frames = kept_pixel_frames(layout)
    gen = torch.Generator().manual_seed(0)
    base = [torch.rand(3, 1, 8, 8, generator=gen) * 0.5 for _ in range(count)]
    return [(b + torch.linspace(0, 0.2, frames)[None, :, None, None] + off).expand(3, frames, 8, 8).clone()
            for b, off in zip(base, offsets)]


def test_fix_joins_moves_the_new_segments_colours_to_the_shared_frames_of_the_previous():
    layout = mmpl_layout(9)
    overlap, frames = overlap_pixel_frames(layout), kept_pixel_frames(layout)
    videos = _ramp_segments(layout, 2, [0.0, 0.3])
    videos[1][:, :overlap] = videos[0][:, -overlap:] + 0.3  # the same moment, shown 0.3 brighter by segment 2
    plain, fixed = stitch(videos, layout), stitch(videos, layout, fix_joins=4)
    assert plain.shape == fixed.shape
    join = frames
    shift = lambda v: (v[:, join] - videos[1][:, overlap]).mean()  # noqa: E731
    assert abs(shift(plain)) < 1e-6 and abs(shift(fixed) + 0.3) < 1e-4  # the step is removed at the join …
    assert torch.allclose(fixed[:, join + 1] - plain[:, join + 1], torch.full_like(plain[:, 0], -0.3 * 3 / 4))
    assert torch.equal(fixed[:, join + 4:], plain[:, join + 4:])  # … and faded out after 4 frames
    assert torch.equal(fixed[:, :join], plain[:, :join])
    u8 = [(v.clamp(0, 1) * 255).round().to(torch.uint8) for v in videos]
    assert stitch(u8, layout, fix_joins=4).dtype == torch.uint8


# --- Appendix F noise init --------------------------------------------------------------------------------------------
def test_noise_init_forms():
    layout = get_layout("mmpl-t2v-13")  # head [4, 5] between planning frames 3 and 6
    head = layout.group_of(4)
    latents = torch.randn(16, 13, 4, 4)
    noise = chunk_noise(5, 2, head, (1, 16, 2, 4, 4))
    for form in ("official", "paper"):
        assert torch.equal(initial_noise(noise, layout, head, latents, 0.0, form, seed=5, segment=2), noise)
    official = initial_noise(noise, layout, head, latents, 0.25, "official", seed=5, segment=2)
    assert torch.allclose(official[0, :, 0], 0.25 * latents[:, 3] + 0.75 * noise[0, :, 0])  # 4 ← 3
    assert torch.allclose(official[0, :, 1], 0.25 * latents[:, 6] + 0.75 * noise[0, :, 1])  # 5 ← 6
    paper = initial_noise(noise, layout, head, latents, 1.0, "paper", seed=5, segment=2)
    plan = layout.group_of(3)
    plan_noise = chunk_noise(5, 2, plan, (1, 16, len(layout.groups[plan].frames), 4, 4))[0]
    eps3, eps6 = (plan_noise[:, layout.groups[plan].frames.index(f)] for f in (3, 6))
    a, b = 2 / 3, 1 / 3  # frame 4: a third of the way from 3 to 6
    assert torch.allclose(paper[0, :, 0], (a * eps3 + b * eps6) / math.hypot(a, b), atol=1e-6)
    big = initial_noise(chunk_noise(0, 0, head, (1, 16, 2, 64, 64)), layout, head, torch.zeros(16, 13, 64, 64), 0.5,
                        "paper", seed=0, segment=0)
    assert abs(big.std().item() - 1.0) < 0.02  # variance kept
    with pytest.raises(ValueError, match="noise_init must be one of"):
        GenerationSettings(noise_init="linear")


# --- join report ------------------------------------------------------------------------------------------------------
def test_join_report_flags_a_colour_step_and_passes_a_clean_render():
    from mmpl_core.data.synthetic import render, sample_scene
    from mmpl_core.joins import join_report
    from mmpl_core.video_io import to_uint8_frames

    layout = get_layout("mmpl-t2v-13")
    frames = stitched_frame_count(layout, 3)
    clean = to_uint8_frames(render(sample_scene(101), frames, 64, 64))
    assert not any(s.flagged for s in join_report(clean, layout, 3))
    shifted = clean.copy()
    shifted[93:] = np.clip(shifted[93:].astype(int) + (40, -10, -30), 0, 255).astype(np.uint8)  # a step at S2→S3
    scores = join_report(shifted, layout, 3)
    assert [s.flagged for s in scores] == [False, True] and scores[1].colour_step > 5


# --- plan files -------------------------------------------------------------------------------------------------------
def test_plan_files_record_given_keyframes_and_loops(micro, tmp_path):
    plan = micro.new_plan(["a"], 3, dataclasses.replace(SETTINGS, loop=True, noise_init="paper"))
    latent = torch.randn(16, 4, 4)
    plan = plan.with_target(1, KeyframeTarget(8, latent, label="sky.png"))
    plan = plan.with_target(2, KeyframeTarget(4, source=(0, 4), label="S1 mid"))
    plan = micro.plan(plan)
    save_plan(plan, tmp_path / "p")
    doc = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert doc["settings"]["loop"] is True and doc["settings"]["noise_init"] == "paper"
    assert doc["segments"][1]["targets"] == [{"frame": 8, "label": "sky.png", "source": []}]
    assert doc["segments"][2]["targets"] == [{"frame": 4, "label": "S1 mid", "source": [0, 4]}]
    loaded = load_plan(tmp_path / "p")
    assert loaded.changed_segments(plan) == [] and torch.equal(loaded.segments[1].targets[0].latent, latent)
    # a version-3 plan folder (no targets, no loop) still loads
    old = json.loads(json.dumps(doc))
    old["format_version"] = 3
    del old["settings"]["loop"], old["settings"]["noise_init"]
    for entry in old["segments"]:
        del entry["targets"], entry["target_file"]
    (tmp_path / "p" / "plan.json").write_text(json.dumps(old))
    v3 = load_plan(tmp_path / "p")
    assert (v3.settings.loop, v3.settings.noise_init) == (False, "official") and all(not s.targets for s in v3.segments)
    bad = json.loads(json.dumps(doc))
    bad["segments"][2]["targets"][0]["source"] = [2, 4]
    (tmp_path / "p" / "plan.json").write_text(json.dumps(bad))
    with pytest.raises(PlanFileError, match=r"segments\[2\]\.targets\[0\]\.source expected \[\] or \[an earlier"):
        load_plan(tmp_path / "p")
    bad["segments"][2]["targets"][0]["source"], bad["segments"][1]["target_file"] = [0, 4], None
    (tmp_path / "p" / "plan.json").write_text(json.dumps(bad))
    with pytest.raises(PlanFileError, match=r"segments\[1\]\.target_file expected a file"):
        load_plan(tmp_path / "p")


def test_plan_is_equal_only_with_the_same_targets(micro):
    plan = micro.new_plan(["a"], 2, SETTINGS)
    one = plan.with_target(1, KeyframeTarget(8, torch.zeros(16, 4, 4)))
    assert isinstance(one, Plan) and one.changed_segments(plan) == [1]
    assert one.changed_segments(plan.with_target(1, KeyframeTarget(8, torch.zeros(16, 4, 4)))) == []
    assert one.changed_segments(plan.with_target(1, KeyframeTarget(8, torch.ones(16, 4, 4)))) == [1]


def test_join_report_seams_are_the_quality_benchmarks():
    from mmpl_core.joins import join_report
    from mmpl_core.metrics.bins import TimeBins
    from mmpl_core.metrics.temporal import seams

    layout = get_layout("mmpl-t2v-13")
    video = np.random.default_rng(0).integers(0, 255, (stitched_frame_count(layout, 4), 16, 16, 3), dtype=np.uint8)
    whole = seams(video, TimeBins.segments(layout, 4))  # what `mmpl bench quality` computes
    scores = join_report(video, layout, 4)
    assert np.allclose([s.seam for s in scores], whole["score"])
    assert np.allclose([s.seam_block for s in scores], whole["block_score"])
    assert [s.frame for s in scores] == list(TimeBins.segments(layout, 4).joins)


def test_target_edits_from_the_keyframe_editor(micro):
    from mmpl_core.edits import EditError, apply_edits, parse_edits

    plan = micro.plan(micro.new_plan(["a"], 3, SETTINGS))
    latent = torch.randn(16, 4, 4)
    edits = parse_edits(json.dumps({"edits": [{"op": "target", "segment": 1, "role": "terminal", "image": 0},
                                              {"op": "target", "segment": 2, "role": "mid", "from": [0, 4]}]}))
    edited = apply_edits(plan, edits, encode_image=lambda ref, frame: latent)
    assert edited.replan_start() == 1 and edited.segments[0] == plan.segments[0]
    (t1,), (t2,) = edited.segments[1].targets, edited.segments[2].targets
    assert (t1.frame, t1.label, t2.frame, t2.source, t2.label) == (8, "image 0", 4, (0, 4), "S1 f4")
    replanned = micro.plan(edited, start=edited.replan_start())
    assert torch.equal(replanned.segments[1].latents.latents[:, 8], latent)
    for bad, message in (({"op": "target", "segment": 1, "role": "mid"}, "'target' needs 'image'"),
                         ({"op": "target", "segment": 1, "image": 0}, "'target' needs 'frame'"),
                         ({"op": "target", "segment": 1, "role": "mid", "from": [0]},
                          "'from' must be \\[segment, frame\\]"),
                         ({"op": "target", "segment": 1, "role": "early", "image": 0}, "role 'early'")):
        with pytest.raises(EditError, match=message):
            apply_edits(plan, parse_edits(json.dumps([bad])), encode_image=lambda ref, frame: latent)


def test_extending_a_loop_replans_its_old_last_segment(micro):
    plan = micro.plan(micro.new_plan(["a"], 2, dataclasses.replace(SETTINGS, loop=True)))
    longer = plan.extended(3, "a")
    assert longer.statuses() == ["planned", "empty", "empty"] and longer.replan_start() == 1
    replanned = micro.plan(longer, start=longer.replan_start())
    assert replanned.first_difference(plan) == 1  # segment 0 bit-identical
    held = segment_targets(replanned, 2, micro.vae)
    assert all(torch.equal(replanned.segments[2].latents.latents[:, f], v) for f, v in held.items())
    assert not segment_targets(replanned, 1, micro.vae)  # the old last segment is an ordinary one now
