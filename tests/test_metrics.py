"""Quality metrics: each flags its injected defect (colour ramp, blur ramp, hard cut, freeze, shake, lost object)
and none flags a clean video of the synthetic world."""
import dataclasses

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("skimage")

from mmpl_core.data.synthetic import render, sample_scene  # noqa: E402
from mmpl_core.layout import get_layout  # noqa: E402
from mmpl_core.metrics import defects  # noqa: E402
from mmpl_core.metrics.bins import TimeBins, check_frames  # noqa: E402
from mmpl_core.metrics.evaluate import Thresholds, evaluate_video  # noqa: E402
from mmpl_core.video_io import to_uint8_frames  # noqa: E402

SEGMENTS = 6
BINS = TimeBins.segments(get_layout("mmpl-t2v-13"), SEGMENTS)  # 49 + 44·5 = 269 frames, joins every 44 frames
LIMITS = Thresholds()
DEFECT_START = BINS.joins[1]  # defects begin with segment 3


@pytest.fixture(scope="module")
def scene():
    return dataclasses.replace(sample_scene(1), light_period=1e9)  # steady light: any colour change is a defect


@pytest.fixture(scope="module")
def clean(scene):
    return to_uint8_frames(render(scene, BINS.num_frames))


@pytest.fixture(scope="module")
def clean_quality(clean, scene):
    return evaluate_video(clean, BINS, scene)


def flagged(quality):
    return sorted(name for name, on in quality.flags.items() if on)


def test_time_bins_follow_the_stitched_segments():
    assert BINS.num_frames == 49 + 44 * (SEGMENTS - 1)
    assert BINS.joins == tuple(49 + 44 * k for k in range(SEGMENTS - 1))
    assert BINS.bounds[0] == (0, 49) and BINS.bounds[-1][1] == BINS.num_frames
    assert all(j in BINS.block_starts() for j in BINS.joins)  # every join is a latent-block boundary
    assert TimeBins.uniform(10, 4).bounds == ((0, 4), (4, 8), (8, 10))
    assert TimeBins.uniform(9, 4).bounds == ((0, 4), (4, 9))


def test_clean_video_is_not_flagged(clean_quality):
    assert flagged(clean_quality) == []
    s = clean_quality.series
    assert max(s["delta_e"]) < 1.0 and max(s["hist_emd"]) < 1.0
    assert max(abs(v) for v in s["sharpness_loss"]) < 0.1
    assert 0.8 < clean_quality.seam_ratio < 1.2 and 0.8 < clean_quality.seam_block_ratio < 1.2
    assert max(s["freeze"]) == 0.0
    assert min(s["fidelity_recall"]) == 1.0 and min(s["fidelity_exact"]) == 1.0


def test_world_light_changes_brightness_but_not_sharpness():
    """The world's ±20 % light is a real colour change (it shows as ΔE), and sharpness ignores it."""
    scene = sample_scene(1)
    quality = evaluate_video(to_uint8_frames(render(scene, BINS.num_frames)), BINS, scene)
    assert max(quality.series["delta_e"]) > 2.0
    assert not quality.flags["sharpness_loss"] and not quality.flags["seam"] and not quality.flags["fidelity"]


def test_colour_ramp_is_flagged_as_colour_drift_growing_with_time(clean, scene, clean_quality):
    quality = evaluate_video(defects.colour_ramp(clean, DEFECT_START), BINS, scene)
    assert quality.flags["colour_drift"]
    delta_e = np.array(quality.series["delta_e"])
    assert delta_e[-1] > 3 * LIMITS.delta_e and np.all(np.diff(delta_e[2:]) > 0)
    assert delta_e[1] < 1.0  # untouched segment 2
    assert quality.series["hist_emd"][-1] > LIMITS.hist_emd
    assert not quality.flags["seam"] and not quality.flags["freeze"] and not quality.flags["jerk"]


def test_blur_ramp_is_flagged_as_sharpness_loss_not_colour(clean, scene):
    quality = evaluate_video(defects.blur_ramp(clean, DEFECT_START), BINS, scene)
    assert quality.flags["sharpness_loss"] and not quality.flags["colour_drift"]
    rel = quality.series["sharpness_rel"]
    assert rel[-1] < 0.3 and abs(rel[1] - 1) < 0.1
    assert not quality.flags["seam"] and not quality.flags["freeze"]


def test_hard_cut_at_a_join_is_flagged_as_a_seam_there(clean, scene):
    other = to_uint8_frames(render(dataclasses.replace(sample_scene(7), light_period=1e9), BINS.num_frames))
    join = 2
    quality = evaluate_video(defects.hard_cut(clean, other, BINS.joins[join]), BINS, scene)
    assert quality.flags["seam"]
    seam = quality.series["seam"]
    assert seam[join + 1] > 5 * LIMITS.seam
    assert all(v < LIMITS.seam for k, v in enumerate(seam[1:], start=1) if k != join + 1)
    assert quality.flags["fidelity"]  # the other scene's objects are not the prompted ones


def test_freeze_is_flagged_in_its_segment(clean, scene):
    start, length = BINS.bounds[3][0] + 5, 30
    quality = evaluate_video(defects.freeze(clean, start, length), BINS, scene)
    assert quality.flags["freeze"] and not quality.flags["colour_drift"]
    freeze = quality.series["freeze"]
    assert freeze[3] > 0.5 and all(f == 0 for k, f in enumerate(freeze) if k != 3)
    assert quality.series["motion"][3] < 0.6 * quality.series["motion"][2]


def test_camera_shake_is_flagged_as_jerky_flow(clean, scene, clean_quality):
    quality = evaluate_video(defects.jitter(clean, DEFECT_START), BINS, scene)
    assert quality.flags["jerk"] and not clean_quality.flags["jerk"]
    assert min(quality.series["jerk"][2:]) > 1.5 * max(clean_quality.series["jerk"])


def test_a_lost_object_is_flagged_by_world_fidelity():
    """Segment 3 on, the second of the scene's objects is gone (same background and motion otherwise)."""
    scene = dataclasses.replace(sample_scene(7), light_period=1e9)  # two objects: a green square and a red circle
    assert len(scene.objects) == 2
    fewer = dataclasses.replace(scene, objects=scene.objects[:1])
    video = defects.hard_cut(to_uint8_frames(render(scene, BINS.num_frames)),
                             to_uint8_frames(render(fewer, BINS.num_frames)), DEFECT_START)
    quality = evaluate_video(video, BINS, scene)
    assert quality.flags["fidelity"]
    recall, count_ok = quality.series["fidelity_recall"], quality.series["fidelity_count_ok"]
    assert recall[:2] == [1.0, 1.0] and max(recall[2:]) < 1.0 and max(count_ok[2:]) == 0.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="frames must be uint8 RGB frames"):
        check_frames(np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="video has 3 frames but the time bins cover 269"):
        check_frames(np.zeros((3, 8, 8, 3), np.uint8), BINS, name="video")
    with pytest.raises(ValueError, match="contiguous"):
        TimeBins(((0, 4), (5, 9)))
    with pytest.raises(ValueError, match="hard_cut"):
        defects.hard_cut(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((5, 8, 8, 3), np.uint8), 2)


def test_missing_optional_dependency_names_the_extra():
    from mmpl_core.metrics._deps import require

    with pytest.raises(ImportError, match=r"mmpl-long-video\[metrics\]"):
        require("no_such_module_for_mmpl")
