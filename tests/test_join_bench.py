"""The join benchmark (`mmpl bench joins`) end to end in a small configuration (1 prompt, 2 segments, 2 steps)."""
import json

import pytest

pytest.importorskip("cv2")
pytest.importorskip("skimage")

from mmpl_core import demo  # noqa: E402
from mmpl_core.cli import main  # noqa: E402

pytestmark = pytest.mark.skipif(not demo.available(), reason="the embedded demo models are missing")


def test_join_benchmark_small(tmp_path, capsys):
    out = tmp_path / "joins.json"
    assert main(["bench", "joins", "--prompts", "1", "--segments", "2", "--steps", "2", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"mmpl", "mmpl_fix_joins", "mmpl_init_official", "mmpl_init_paper",
                                       "mmpl_init_paper_full"}
    for entry in result["variants"].values():
        assert {"seam", "seam_block", "colour_step", "delta_e_last"} <= set(entry["mean"])
    plain, fixed = result["variants"]["mmpl"]["mean"], result["variants"]["mmpl_fix_joins"]["mean"]
    assert fixed["seam"] != plain["seam"]  # join correction changed the frames at the join
    [loop] = result["loop"]["per_prompt"]
    assert loop["seam"] >= 0 and loop["other_joins_seam"] > 0
    assert [j["join"] for j in result["main"]["joins"]] == ["S1→S2"]
    assert "**Planned loop**" in printed and "dit_mmpl.safetensors" in printed
    # a second run reads every video from the cache
    assert main(["bench", "joins", "--prompts", "1", "--segments", "2", "--steps", "2", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert json.loads(out.read_text())["variants"] == result["variants"]
