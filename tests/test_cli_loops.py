"""`mmpl generate --loop --keyframe ... --fix-joins` end to end on a tiny random model, the join report in the plan
folder, and clear errors for bad --keyframe values."""
import json

import pytest
import torch
from PIL import Image

from mmpl_core.cli import main
from mmpl_core.layout import mmpl_layout
from mmpl_core.plan_store import load_plan
from mmpl_core.stitch import stitched_frame_count
from mmpl_core.video_io import count_mp4_frames

FAST = ["--model", "random:micro", "--layout", "mmpl-t2v-9", "--size", "32", "32", "--steps", "2", "--cfg", "2"]


@pytest.fixture
def red(tmp_path):
    Image.new("RGB", (40, 32), (255, 0, 0)).save(tmp_path / "red.png")
    return tmp_path / "red.png"


def test_cli_loop_with_keyframe_targets_and_join_report(tmp_path, red, capsys):
    out = tmp_path / "loop.mp4"
    args = ["generate", *FAST, "--prompt", "a", "--segments", "3", "--loop", "--keyframe", f"2:terminal={red}",
            "--keyframe", "3:mid=1:mid", "--fix-joins", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert count_mp4_frames(out) == stitched_frame_count(mmpl_layout(9), 3, loop=True) == 3 * 28
    assert "S3→S1" in printed and "join report (3 joins" in printed
    plan = load_plan(tmp_path / "loop.plan")
    assert plan.settings.loop and [len(s.targets) for s in plan.segments] == [0, 1, 1]
    given, reference = plan.segments[1].targets[0], plan.segments[2].targets[0]
    assert (given.frame, given.label, reference.frame, reference.source) == (8, "red.png", 4, (0, 4))
    assert torch.equal(plan.segments[1].latents.latents[:, 8], given.latent)
    assert torch.equal(plan.segments[2].latents.latents[:, 4], plan.segments[0].latents.latents[:, 4])
    report = json.loads((tmp_path / "loop.plan" / "joins.json").read_text())
    assert [j["join"] for j in report["joins"]] == ["S1→S2", "S2→S3", "S3→S1"] and report["fix_joins"] == 8
    assert all(j["seam"] >= 0 and j["colour_step"] >= 0 for j in report["joins"])
    # the same command resumes the finished plan; other targets are another plan
    assert main(args) == 0
    assert "resuming the plan" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="holds another plan"):
        main([*args[:-5], "--fix-joins", "--out", str(out)])


@pytest.mark.parametrize("spec, message", [
    ("2mid=IMG", r"--keyframe '2mid=.*': expected SEG:ROLE=SOURCE"),
    ("5:mid=IMG", r"segment 5 is outside 1..3"),
    ("2:early=IMG", r"role 'early': expected one of \['mid', 'terminal'\] or a latent index in \[2, 4, 7, 8\]"),
    ("2:1=IMG", r"latent 1 is not a planned keyframe of layout mmpl-t2v-9"),
    ("2:mid=missing.png", r"cannot read image missing.png"),
    ("1:mid=2:mid", r"--keyframe for segment 1: a target of segment 0 can be a keyframe .* of an earlier segment"),
])
def test_cli_bad_keyframe_values_name_the_input(tmp_path, red, spec, message):
    with pytest.raises(SystemExit, match=message):
        main(["plan", *FAST, "--prompt", "a", "--segments", "3", "--keyframe", spec.replace("IMG", str(red)),
              "--plan-dir", str(tmp_path / "p")])


def test_cli_fix_joins_takes_a_frame_count(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["populate", *FAST[:4], "--plan-dir", str(tmp_path), "--fix-joins", "-1"])
    assert "expected a number of frames >= 0" in capsys.readouterr().err
