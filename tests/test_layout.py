"""Segment layouts: the official tables, the training-mask rule, the generator, ablations and validation."""
import pytest

from mmpl_core.layout import (
    PLAN, POPULATE, WAN_I2V, WAN_T2V, WAN_T2V_NO_EARLY, WAN_T2V_NO_MID, FrameGroup, LayoutError, SegmentLayout,
    get_layout, mmpl_layout,
)

# Step maps of the official training masks (reference §1.4): a frame's step = the group that produces it.
T2V_STEPS = [0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 1, 3, 3, 3, 3, 3, 3, 1, 1]
NO_EARLY_STEPS = [0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 3, 3, 3, 3, 3, 3, 1, 1]
NO_MID_STEPS = [0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 1, 1]
I2V_STEPS = [0, 1, 2, 2, 3, 3, 3, 3, 3, 3, 2, 2, 2, 4, 4, 4, 4, 4, 4, 2, 2]


def official_visibility(steps, hide_terminal_from=None):
    """Query frame q may see key frame k: same step, or an earlier step (the noisy-token rule of the TF mask),
    except that step `hide_terminal_from` queries may not see the terminal frames 19, 20."""
    n = len(steps)
    vis = [[steps[k] == steps[q] or steps[k] < steps[q] for k in range(n)] for q in range(n)]
    if hide_terminal_from is not None:
        for q in range(n):
            if steps[q] == hide_terminal_from:
                vis[q][19] = vis[q][20] = False
    return vis


def test_layout_t2v_matches_official_table():
    assert [g.frames for g in WAN_T2V.groups] == [
        (0, 1), (2, 3, 10, 11, 12, 19, 20), (4, 5, 6, 7, 8, 9), (13, 14, 15, 16, 17, 18)]
    assert [set(g.sees) for g in WAN_T2V.groups] == [
        set(), {0, 1}, {0, 1, 2, 3, 10, 11, 12}, set(range(13)) | {19, 20}]
    assert [g.phase for g in WAN_T2V.groups] == [PLAN, PLAN, POPULATE, POPULATE]
    assert WAN_T2V.terminal == (19, 20) and WAN_T2V.context_frames == 2
    assert WAN_T2V.keyframes == (0, 1, 2, 3, 10, 11, 12, 19, 20)
    # 15 cached frames, as the official 15-slot cache: 0..12, 19, 20 (13..18 are never seen)
    assert WAN_T2V.seen_frames == frozenset(range(13)) | {19, 20}


@pytest.mark.parametrize("layout,steps,hidden", [
    (WAN_T2V, T2V_STEPS, 2), (WAN_T2V_NO_EARLY, NO_EARLY_STEPS, 2), (WAN_T2V_NO_MID, NO_MID_STEPS, 2),
    (WAN_I2V, I2V_STEPS, None),
])
def test_layout_visibility_matches_training_mask_rule(layout, steps, hidden):
    assert [layout.group_of(f) for f in range(21)] == steps
    assert layout.visibility() == official_visibility(steps, hidden)


def test_layout_i2v_matches_official_table():
    assert [g.frames for g in WAN_I2V.groups][:3] == [(0,), (1,), (2, 3, 10, 11, 12, 19, 20)]
    head = WAN_I2V.groups[3]
    assert {19, 20} <= set(head.sees)  # I2V's head set sees the terminal anchors
    assert WAN_I2V.image_frames == 1 and WAN_I2V.context_frames == 2


@pytest.mark.parametrize("n", [9, 11, 13, 17, 21, 25, 33])
def test_layout_generator_valid_for_other_lengths(n):
    for i2v in (False, True):
        lay = mmpl_layout(n, image_to_video=i2v)
        frames = sorted(f for g in lay.groups for f in g.frames)
        assert frames == list(range(n))
        assert lay.terminal == (n - 2, n - 1)
        plan = lay.groups[lay.plan_groups[-1]]
        assert 2 in plan.frames and n // 2 in plan.frames  # t_a = 2, t_b ≈ N/2, t_c = N
        assert get_layout(f"mmpl-{'i2v' if i2v else 't2v'}-{n}") == lay


def test_layout_generator_rejects_too_short_segments():
    with pytest.raises(LayoutError, match="cannot hold"):
        mmpl_layout(7)


def test_layout_ablations_are_one_line_each():
    assert WAN_T2V_NO_EARLY == mmpl_layout(21, early=0, name="wan-t2v-no-early")
    assert WAN_T2V_NO_EARLY.groups[1].frames == (10, 11, 12, 19, 20)
    assert WAN_T2V_NO_MID.groups[1].frames == (2, 3, 19, 20)


def _groups(*specs):
    return tuple(FrameGroup(name, frames, sees, phase) for name, frames, sees, phase in specs)


@pytest.mark.parametrize("groups,message", [
    (_groups(("a", (0, 1), (), PLAN), ("b", (1, 2, 3), (0,), POPULATE)), "more than once"),
    (_groups(("a", (0, 1), (), PLAN), ("b", (2,), (0,), POPULATE)), "never produced"),
    (_groups(("a", (0, 1), (3,), PLAN), ("b", (2, 3), (0,), POPULATE)), "before any group"),
    (_groups(("a", (0, 1), (), PLAN), ("b", (2, 3), (2,), POPULATE)), "its own frames"),
    (_groups(("a", (0, 1), (), PLAN), ("b", (2, 3, 7), (0,), POPULATE)), "outside"),
    (_groups(("a", (0, 1), (), POPULATE), ("b", (2, 3), (0,), PLAN)), "after a populate"),
    (_groups(("a", (0, 1), (), PLAN), ("b", (), (0,), POPULATE), ("c", (2, 3), (), POPULATE)), "no frames"),
    (_groups(("a", (0, 1), (), PLAN), ("b", (2, 3), (0,), "later")), "phase"),
])
def test_layout_validation_errors(groups, message):
    with pytest.raises(LayoutError, match=message):
        SegmentLayout("bad", 4, groups, context_frames=2)


def test_layout_validation_context_and_terminal():
    ok = _groups(("a", (0, 1, 2), (), PLAN), ("b", (3,), (0,), POPULATE))
    with pytest.raises(LayoutError, match="group boundary"):
        SegmentLayout("bad", 4, ok, context_frames=2)
    with pytest.raises(LayoutError, match="terminal"):
        SegmentLayout("bad", 4, ok, context_frames=3, terminal=(3,))
    SegmentLayout("good", 4, ok, context_frames=3, terminal=(1, 2))


def test_layout_unknown_name():
    with pytest.raises(LayoutError, match="unknown layout"):
        get_layout("wan-t2v-99")


def test_keyframe_roles_name_the_anchor_groups():
    from mmpl_core.keyframes import keyframe_roles

    assert keyframe_roles(WAN_T2V) == {0: "initial", 1: "initial", 2: "early", 3: "early", 10: "mid", 11: "mid",
                                       12: "mid", 19: "terminal", 20: "terminal"}
    assert keyframe_roles(WAN_I2V) == keyframe_roles(WAN_T2V)
    assert set(keyframe_roles(get_layout("wan-t2v-no-early")).values()) == {"initial", "mid", "terminal"}
    assert list(keyframe_roles(mmpl_layout(13)).values()) == ["initial"] * 2 + ["early"] * 2 + ["mid"] * 2 + ["terminal"] * 2
