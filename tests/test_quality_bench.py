"""The quality benchmark end to end in a small configuration (1 prompt, 2 segments, 2 steps), its cache, its last
JSON line, the `mmpl bench quality` command and its errors."""
import json

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")

from mmpl_core import demo  # noqa: E402
from mmpl_core.metrics.benchmark import PLOT_FILES, final_line, run_quality  # noqa: E402
from mmpl_core.metrics.protocol import GENERATORS, BenchConfig, VideoSource, ablation_layout  # noqa: E402

pytestmark = pytest.mark.skipif(not demo.available(), reason="the embedded demo models are missing")
SMALL = BenchConfig(prompts=1, segments=2, steps=2, generators=("mmpl", "mmpl_no_mid", "ar", "world"))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("quality")
    result = run_quality(SMALL, out=root / "quality.json", plots_dir=root / "plots", cache_dir=root / "cache",
                         tables=root / "tables.md", progress=False)
    return root, result


def test_small_benchmark_scores_every_generator_per_segment(small):
    root, result = small
    assert set(result["generators"]) == set(SMALL.generators)
    for name, g in result["generators"].items():
        assert len(g["per_prompt"]) == 1
        assert all(len(values) == SMALL.segments for values in g["per_bin"].values())
        assert g["per_bin"]["delta_e"][0] == 0.0  # segment 1 against itself
    world = result["generators"]["world"]["summary"]
    assert world["recall_first"] == 1.0 and 0.8 < world["seam_ratio"] < 1.25  # the ground truth has no seams
    assert json.loads((root / "quality.json").read_text())["goal"] == result["goal"]
    assert "MMPL (full)" in (root / "tables.md").read_text()
    for name in PLOT_FILES.values():
        assert (root / "plots" / name).stat().st_size > 1000


def test_last_line_is_the_goal_json(small):
    _, result = small
    line = json.loads(final_line(result))
    assert {"color_drift_ratio", "sharpness_loss_ratio", "seam_ratio"} <= set(line)
    mmpl, ar = (result["generators"][n]["summary"] for n in ("mmpl", "ar"))
    assert line["color_drift_ratio"] == pytest.approx(mmpl["delta_e_last"] / ar["delta_e_last"], rel=1e-3)
    assert line["seam_ratio"] == pytest.approx(mmpl["seam_ratio"], rel=1e-3)


def test_cached_videos_are_reused_not_regenerated(small, monkeypatch):
    root, result = small

    def no_generation(*args):
        raise AssertionError("a cached video was generated again")

    monkeypatch.setattr(VideoSource, "_generate", no_generation)
    again = run_quality(SMALL, cache_dir=root / "cache", progress=False)
    assert again["goal"] == result["goal"]
    source = VideoSource(SMALL, root / "cache")
    frames = source.video(GENERATORS["mmpl"], 0)
    assert frames.dtype == np.uint8 and frames.shape == (result["config"]["frames"], 64, 64, 3)


def test_ablation_layouts_drop_their_planning_group():
    from mmpl_core.layout import get_layout

    base = get_layout("mmpl-t2v-13")
    no_early, no_mid = ablation_layout("no-early", base), ablation_layout("no-mid", base)
    assert 2 in base.keyframes and 2 not in no_early.keyframes and 3 not in no_early.keyframes
    assert 6 in base.keyframes and not {6, 7} & set(no_mid.keyframes)
    assert no_early.terminal == no_mid.terminal == base.terminal
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_layout("no-terminal", base)


def test_cli_runs_from_the_cache_and_prints_the_json_last(small, capsys):
    from mmpl_core.cli import main

    root, result = small
    code = main(["bench", "quality", "--prompts", "1", "--segments", "2", "--steps", "2",
                 "--generators", "mmpl,mmpl_no_mid,ar,world", "--cache-dir", str(root / "cache"),
                 "--out", str(root / "cli.json"), "--no-plots", "--tables", str(root / "cli.md")])
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["color_drift_ratio"] == result["goal"]["color_drift_ratio"]


@pytest.mark.parametrize("argv, message", [
    (["--generators", "mmpl,sora"], "unknown generator"),
    (["--segments", "1"], "segments >= 2"),
    (["--steps", "0"], "steps must be >= 1"),
    (["--threads", "0"], "--threads"),
])
def test_cli_bad_input_is_named(argv, message, tmp_path):
    from mmpl_core.cli import main

    with pytest.raises(SystemExit, match=message):
        main(["bench", "quality", "--out", str(tmp_path / "q.json"), "--no-plots", *argv])
