"""The embedded demo model: shipped, ComfyUI-loadable shapes, small, and `mmpl generate` runs on it."""
import json

import pytest
import torch

from mmpl_core import demo
from mmpl_core.checkpoints import infer_config, load_wan_state_dict
from mmpl_core.cli import main
from mmpl_core.layout import get_layout
from mmpl_core.stitch import stitched_frame_count
from mmpl_core.video_io import count_mp4_frames


@pytest.mark.parametrize("mode", demo.MODES)
def test_demo_bundle_is_shipped_small_and_comfyui_loadable(mode):
    assert demo.available(), f"demo bundle missing from {demo.DEMO_DIR}"
    bundle = demo.DemoBundle.load(mode)
    total = sum(p.stat().st_size for p in demo.DEMO_DIR.iterdir() if p.is_file())
    assert total <= 60 * 2**20, f"demo assets take {total / 2**20:.1f} MiB (limit 60)"
    state = load_wan_state_dict(bundle.dit)
    cfg = infer_config(state)
    # ComfyUI's Wan detection assumes head_dim 128, text_dim 4096, freq_dim 256, patch (1, 2, 2)
    assert (cfg.head_dim, cfg.text_dim, cfg.freq_dim, cfg.patch_size) == (128, 4096, 256, (1, 2, 2))
    assert all(v.dtype == torch.float16 for v in state.values())
    card = json.loads((demo.DEMO_DIR / "demo.json").read_text())
    assert get_layout(card[mode]["layout"]).num_frames >= 9
    # the baseline has the same size as the MMPL model: the benchmark compares them on equal terms
    assert cfg == infer_config(load_wan_state_dict(demo.DemoBundle.load("mmpl").dit))


@pytest.mark.parametrize("mode", demo.MODES)
def test_demo_generate_runs(tmp_path, mode):
    out = tmp_path / "demo.mp4"
    model = {"mmpl": "demo", "ar": "demo:ar"}[mode]
    assert main(["generate", "--model", model, "--prompt", "one object: a red circle bounces over a navy to black gradient",
                 "--segments", "2", "--steps", "3", "--out", str(out)]) == 0
    layout = get_layout(demo.DemoBundle.load(mode).layout)
    assert count_mp4_frames(out) == stitched_frame_count(layout, 2)
    assert out.with_suffix(".keyframes.png").exists()


def test_demo_refuses_a_foreign_vae(tmp_path):
    with pytest.raises(SystemExit, match="own VAE"):
        main(["segment", "--vae", str(tmp_path), "--steps", "1"])


def test_demo_warns_about_words_it_never_saw(tmp_path, capsys):
    """The demo knows its synthetic world's words and word pairs; anything else is named, with the words it knows.
    In-grammar prompts pass silently; other models (no vocabulary) are never warned about."""
    encoder = demo.DemoBundle.load("mmpl").text_encoder()
    good = "two objects: a red circle and a yellow square bounce over a navy to black gradient, the camera pans left"
    assert demo.unknown_words_message(encoder, [good]) is None
    message = demo.unknown_words_message(encoder, ["a dog runs over a blue to black gradient"])
    assert message.startswith("the demo model was trained on the synthetic world's prompts and never saw 'dog', "
                              "'runs', 'blue to'") and "maroon navy" in message
    from mmpl_core.text import HashedTextEncoder

    assert demo.unknown_words_message(HashedTextEncoder(dim=8), ["a dog"]) is None
    assert main(["plan", "--prompt", "a dog runs", "--segments", "1", "--steps", "1",
                 "--plan-dir", str(tmp_path / "p")]) == 0
    assert "mmpl: warning: the demo model was trained on the synthetic world's prompts and never saw 'dog', 'runs'" \
        in capsys.readouterr().err
