"""Real-weights path on tiny models: both Wan2.1 folder layouts detected and loaded to the same weights, the MMPL
checkpoint replacing the DiT, streaming loads, clear errors, and `mmpl generate --wan DIR --checkpoint FILE`."""
from __future__ import annotations

import shutil
import weakref

import pytest
import torch

from mmpl_core import checkpoints
from mmpl_core.checkpoints import CheckpointError, LazyTensor, load_wan_model, save_wan_safetensors
from mmpl_core.cli import main
from mmpl_core.cli.common import CLIError
from mmpl_core.model import build_random_model
from mmpl_core.wan_folder import (
    WanFolderError, find_wan_folder, load_folder_dit, load_folder_text_encoder, load_folder_vae,
)
from wan_tiny import DIT, build_parts, write_diffusers, write_mmpl_checkpoint, write_original


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    dit, vae, umt5 = build_parts(seed=2)
    ckpt = write_mmpl_checkpoint(root / "t2v_tiny.pt")
    return {"original": write_original(root / "original", dit, vae, umt5),
            "diffusers": write_diffusers(root / "diffusers", dit, vae, umt5),
            "dit": dit, "vae": vae, "ckpt": ckpt, "root": root}


def test_wan_folder_detects_both_layouts(folders):
    orig, diff = find_wan_folder(folders["original"]), find_wan_folder(folders["diffusers"])
    assert orig.layout == "original" and diff.layout == "diffusers"
    assert orig.vae.name == "Wan2.1_VAE.pth" and orig.text_encoder.name == "models_t5_umt5-xxl-enc-bf16.pth"
    assert orig.tokenizer == folders["original"] / "google" / "umt5-xxl"
    assert diff.dit == folders["diffusers"] / "transformer" and diff.text_encoder.name == "text_encoder"
    assert orig.wan_config() == DIT and diff.wan_config() == DIT  # config.json in either naming


def test_wan_folder_layouts_load_the_same_weights(folders):
    orig, diff = find_wan_folder(folders["original"]), find_wan_folder(folders["diffusers"])
    a, b = load_folder_dit(orig, dtype=torch.float32), load_folder_dit(diff, dtype=torch.float32)
    assert a.config == b.config == DIT  # heads from config.json (head_dim 16: the dim/128 rule would be wrong)
    reference = folders["dit"].state_dict()
    for key, value in reference.items():
        assert torch.equal(a.state_dict()[key], value) and torch.equal(b.state_dict()[key], value), key
    vae_a, vae_b = load_folder_vae(orig), load_folder_vae(diff)
    latents = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(vae_a.decode(latents), vae_b.decode(latents))
    assert torch.equal(vae_a.decode(latents), folders["vae"].decode(latents))
    text_a, text_b = load_folder_text_encoder(orig), load_folder_text_encoder(diff)
    emb = text_a.encode("a red circle bounces")
    assert emb.shape == (1, 512, DIT.text_dim) and torch.equal(emb, text_b.encode("a red circle bounces"))


def test_wan_folder_checkpoint_replaces_the_dit(folders, tmp_path):
    path, gen, ema = folders["ckpt"]
    no_dit = tmp_path / "no_dit"
    shutil.copytree(folders["original"], no_dit)
    for f in no_dit.glob("diffusion_pytorch_model*"):
        f.unlink()
    with pytest.raises(WanFolderError, match=r"missing: diffusion_pytorch_model\*\.safetensors"):
        find_wan_folder(no_dit)
    folder = find_wan_folder(no_dit, need_dit=False)  # the checkpoint replaces the DiT: shards not needed
    for use_ema, expected in ((False, gen), (True, ema)):
        model = load_folder_dit(folder, path, ema=use_ema, dtype=torch.bfloat16)
        for key, value in expected.items():
            assert torch.equal(model.state_dict()[key], value.to(torch.bfloat16)), key
    wide = tmp_path / "wide.pt"
    torch.save({"generator": {"model." + k: v for k, v in
                              build_random_model(DIT.with_(dim=64, num_heads=2)).state_dict().items()}}, wide)
    with pytest.raises(CheckpointError, match=r"wide\.pt.*width 64.*width 32"):
        load_folder_dit(folder, wide)


def test_wan_folder_errors_name_what_is_missing(folders, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WanFolderError, match=r"neither a diffusers folder \(model_index\.json missing\) nor an "
                                             r"original Wan2\.1 folder \(missing: diffusion_pytorch_model.*"
                                             r"Wan2\.1_VAE\.pth, models_t5_umt5-xxl-enc-bf16\.pth, google/umt5-xxl"):
        find_wan_folder(tmp_path / "empty")
    broken = tmp_path / "diff"
    shutil.copytree(folders["diffusers"], broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(WanFolderError, match=r"diffusers folder .*missing: text_encoder/config\.json"):
        find_wan_folder(broken)
    with pytest.raises(WanFolderError, match="not a folder"):
        find_wan_folder(tmp_path / "nope")
    with pytest.raises(CLIError, match=r"--wan .*missing: text_encoder"):
        main(["generate", "--wan", str(broken), "--prompt", "x", "--out", str(tmp_path / "x.mp4")])
    with pytest.raises(CLIError, match="--checkpoint goes with --wan"):
        main(["generate", "--checkpoint", "x.pt", "--prompt", "x", "--out", str(tmp_path / "x.mp4")])


def test_wan_folder_dit_streams_one_tensor_at_a_time(tmp_path, monkeypatch):
    """fp32 safetensors → bf16 model: tensors are read one by one and each float32 copy is gone before the next is
    read (never a whole float32 state dict in memory), and safetensors' whole-file loader is never used."""
    model = build_random_model(DIT, seed=4)
    path = save_wan_safetensors(model, tmp_path / "dit.safetensors")
    alive, peak = [0], [0]

    def _dead():
        alive[0] -= 1

    real_load = LazyTensor.load

    def tracked(self):
        tensor = real_load(self)
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        weakref.finalize(tensor, _dead)
        return tensor

    monkeypatch.setattr(LazyTensor, "load", tracked)
    monkeypatch.setattr("safetensors.torch.load_file", lambda *a, **k: pytest.fail("whole-file load"))
    loaded = load_wan_model(path, dtype=torch.bfloat16, num_heads=DIT.num_heads)
    assert peak[0] == 1 and alive[0] == 0
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.to(torch.bfloat16)), key
    assert not isinstance(checkpoints._open(path, False)[0]["head.head.weight"], torch.Tensor)  # lazy until read


def test_wan_folder_generate_end_to_end(folders, tmp_path, monkeypatch):
    from mmpl_core.umt5 import UMT5TextEncoder
    from mmpl_core.video_io import count_mp4_frames

    encoded = []
    real_tokenize = UMT5TextEncoder.tokenize
    monkeypatch.setattr(UMT5TextEncoder, "tokenize", lambda self, p: encoded.append(p) or real_tokenize(self, p))
    out = tmp_path / "video.mp4"
    args = ["generate", "--wan", str(folders["original"]), "--checkpoint", str(folders["ckpt"][0]),
            "--prompt", "a red circle bounces", "--segments", "3", "--steps", "1", "--size", "32", "32",
            "--dtype", "float32", "--offload", "text,vae", "--out", str(out)]
    assert main(args) == 0
    assert count_mp4_frames(out) == 81 + 76 * 2  # 3 segments of 21 latents, stitched
    assert (tmp_path / "video.keyframes.png").exists()
    assert len(encoded) == 2  # the prompt and Wan's negative prompt, once each for all 3 segments
    assert main(args) == 0  # resumes from the finished plan folder: nothing re-encoded or re-planned
    assert count_mp4_frames(out) == 233


def test_wan_folder_official_preset_is_printed_and_overridable(capsys):
    from mmpl_core.cli.common import OFFICIAL

    assert OFFICIAL["steps"] == 50 and OFFICIAL["shift"] == 5.0 and OFFICIAL["cfg"] == 5.0
    assert OFFICIAL["size"] == (480, 832) and OFFICIAL["fps"] == 16 and OFFICIAL["layout"] == "wan-t2v"
    assert main(["segment", "--model", "random:micro", "--preset", "official", "--steps", "1", "--size", "32", "48"]) == 0
    captured = capsys.readouterr()
    assert ("settings (preset official): solver unipc, steps 1, shift 5.0, cfg 5.0, size 32x48, fps 16, layout wan-t2v, "
            "negative prompt: Wan2.1's default") in captured.err
    assert "layout wan-t2v" in captured.out
