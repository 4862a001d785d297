"""The `mmpl` command line end to end on a tiny random model (micro DiT, tiny VAE, 9-latent segments)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmpl_core.cli import main
from mmpl_core.layout import mmpl_layout
from mmpl_core.stitch import stitched_frame_count
from mmpl_core.video_io import count_mp4_frames

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--model", "random:micro", "--layout", "mmpl-t2v-9", "--size", "32", "32", "--steps", "2", "--cfg", "2"]


def test_cli_generate_writes_video_and_contact_sheet(tmp_path):
    out = tmp_path / "video.mp4"
    assert main(["generate", *FAST, "--prompt", "a red circle", "--segments", "3", "--out", str(out)]) == 0
    assert count_mp4_frames(out) == stitched_frame_count(mmpl_layout(9), 3)
    sheet = out.with_suffix(".keyframes.png")
    assert sheet.stat().st_size > 0
    assert (tmp_path / "video.plan" / "plan.json").exists()


def test_cli_plan_then_populate_equals_generate(tmp_path):
    args = [*FAST, "--prompt", "a", "--prompt", "b", "--segments", "2"]
    assert main(["generate", *args, "--out", str(tmp_path / "one.mp4")]) == 0
    assert main(["plan", *args, "--plan-dir", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "keyframes.png").exists()
    model = FAST[:4]
    assert main(["populate", *model, "--plan-dir", str(tmp_path / "p"), "--segments", "2"]) == 0
    assert main(["populate", *model, "--plan-dir", str(tmp_path / "p"), "--out", str(tmp_path / "two.mp4")]) == 0
    from mmpl_core.plan_store import load_plan

    one, two = load_plan(tmp_path / "one.plan"), load_plan(tmp_path / "p")
    for a, b in zip(one.segments, two.segments):
        assert np.array_equal(a.latents.latents.numpy(), b.latents.latents.numpy())


def test_cli_edit_replaces_a_keyframe_and_replans_after_it(tmp_path):
    from PIL import Image

    from mmpl_core.plan_store import load_plan

    plan_dir = tmp_path / "p"
    assert main(["plan", *FAST, "--prompt", "a", "--segments", "3", "--plan-dir", str(plan_dir)]) == 0
    before = load_plan(plan_dir)
    Image.new("RGB", (40, 32), (255, 0, 0)).save(tmp_path / "red.png")
    assert main(["edit", *FAST[:4], "--plan-dir", str(plan_dir), "--segment", "2", "--frame", "8",
                 "--image", str(tmp_path / "red.png")]) == 0
    after = load_plan(plan_dir)
    assert after.segments[0] .latents.latents.nan_to_num(7).equal(before.segments[0].latents.latents.nan_to_num(7))
    assert after.segments[1].locked
    assert not after.segments[2].latents.latents[:, :2].equal(before.segments[2].latents.latents[:, :2])


def test_cli_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="neither 'demo'"):
        main(["generate", "--model", str(tmp_path / "missing.pt"), "--prompt", "x", "--out", str(tmp_path / "v.mp4")])
    with pytest.raises(SystemExit, match="plan"):
        main(["populate", *FAST[:4], "--plan-dir", str(tmp_path / "nothing")])
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="--model"):
        main(["segment", "--model", str(tmp_path / "bad.safetensors")])
    with pytest.raises(SystemExit, match="unknown size"):
        main(["segment", "--model", "random:huge"])


def test_cli_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "mmpl_core", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "generate" in done.stdout
