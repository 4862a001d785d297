"""Synthetic world, PCA latent space and the distilled tiny VAE (`-k synthetic`, `-k pca`)."""
import math
import time

import pytest
import torch

from mmpl_core.data.pca_latents import PCALatentSpace, patchify, psnr, unpatchify
from mmpl_core.data.synthetic import (
    BACKGROUNDS, COLOURS, SHAPES, Scene, SceneObject, detect_objects, make_batch, render, sample_scene, scene_prompt,
)

NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


def test_synthetic_scenes_are_seeded_and_in_range():
    assert sample_scene(7) == sample_scene(7) and sample_scene(7) != sample_scene(8)
    pans = 0
    for seed in range(200):
        scene = sample_scene(seed)
        assert 1 <= len(scene.objects) <= 3
        assert len({o.colour for o in scene.objects}) == len(scene.objects)  # distinct colours
        for o in scene.objects:
            assert o.shape in SHAPES and o.colour in COLOURS and 6 <= o.radius <= 11
            assert 0.6 - 1e-9 <= math.hypot(o.vx, o.vy) <= 1.8 + 1e-9
            assert o.radius <= o.x0 <= 64 - o.radius and o.radius <= o.y0 <= 64 - o.radius
        assert all(b in BACKGROUNDS for b in scene.background) and scene.background[0] != scene.background[1]
        assert 60 <= scene.light_period <= 200
        pans += scene.pan != 0
    assert 30 < pans < 90  # pan_probability 0.3
    assert all(len(sample_scene(s, max_objects=1).objects) == 1 for s in range(20))
    assert all(sample_scene(s, pan_probability=0.0).pan == 0 for s in range(20))


def test_synthetic_render_shapes_range_and_determinism():
    scene = sample_scene(3)
    video = render(scene, 9, 48, 80)
    assert video.shape == (3, 9, 48, 80) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1 and video.std() > 0.1
    assert torch.equal(video, render(scene, 9, 48, 80))
    videos, prompts = make_batch(5, 4, 9)
    assert videos.shape == (4, 3, 9, 64, 64) and len(prompts) == 4
    again, prompts_again = make_batch(5, 4, 9)
    assert torch.equal(videos, again) and prompts == prompts_again
    assert not torch.equal(videos, make_batch(6, 4, 9)[0])
    assert not torch.equal(videos[0], videos[1])


def test_synthetic_prompts_name_count_colours_shapes_and_motion():
    scene = Scene((SceneObject("circle", "red", 8, 20, 20, 1, 0), SceneObject("square", "yellow", 7, 40, 40, 0, 1)),
                  ("navy", "black"), 100.0, 0.0, pan=-1.0)
    assert scene_prompt(scene) == ("two objects: a red circle and a yellow square bounce over a navy to black "
                                   "gradient, the camera pans left")
    for seed in range(50):
        scene = sample_scene(seed)
        text = scene_prompt(scene)
        assert text.startswith(NUMBER_WORDS[len(scene.objects)] + " object")
        for o in scene.objects:
            assert f"{o.colour} {o.shape}" in text
        assert ("camera pans" in text) == (scene.pan != 0)


def test_synthetic_continuity():
    scene = sample_scene(11, pan_probability=1.0)
    full = render(scene, 20)
    assert torch.equal(render(scene, 5, start=10), full[:, 10:15])
    assert torch.equal(render(scene, 3, start=1000)[:, 1:], render(scene, 2, start=1001))


def test_synthetic_objects_bounce_inside_the_frame():
    """An object's footprint (pixels that differ from the empty background) keeps its full size for 600 frames:
    it never leaves the frame or gets clipped by a border."""
    for seed in range(6):
        base = sample_scene(seed, max_objects=1)
        obj = base.objects[0]
        empty = Scene((), base.background, base.light_period, base.light_phase, base.pan)
        for size in (64, 32):
            diff = (render(base, 600, size, size) - render(empty, 600, size, size)).abs().amax(0) > 0.1
            area = diff.flatten(1).sum(1).float()  # [T]
            r = obj.radius * size / 64
            inner, outer = (math.pi * x * x if obj.shape == "circle" else 4 * x * x for x in (r - 1, r + 1.5))
            assert inner < area.min() and area.max() < outer


def test_synthetic_detect_objects_finds_colours_and_count():
    objects = (SceneObject("circle", "red", 8, 14, 14, 0, 0), SceneObject("square", "blue", 7, 46, 16, 0, 0),
               SceneObject("circle", "white", 9, 30, 46, 0, 0))
    for light_phase in (0.0, math.pi / 2, -math.pi / 2):  # normal, brightest, darkest
        scene = Scene(objects, ("teal", "maroon"), 100.0, light_phase, pan=1.0)
        found = detect_objects(render(scene, 1)[:, 0])
        assert sorted(f[0] for f in found) == ["blue", "red", "white"]
        for name, cx, cy, area in found:
            o = next(o for o in objects if o.colour == name)
            assert abs(cx - o.x0) < 1 and abs(cy - o.y0) < 1 and area > 0.6 * math.pi * o.radius**2
    videos, _ = make_batch(0, 8, 1)
    for seed in range(8):  # random scenes: never more objects than drawn, colours from the scene
        scene = sample_scene(seed)
        found = detect_objects(render(scene, 1)[:, 0])
        assert {f[0] for f in found} <= {o.colour for o in scene.objects} and len(found) <= len(scene.objects)


def test_synthetic_is_fast():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: immune to OpenMP oversubscription when other jobs share the CPU
    try:
        make_batch(0, 8, 33)
        best = min(_timed(lambda: make_batch(1, 8, 33)) for _ in range(3))
    finally:
        torch.set_num_threads(threads)
    assert best < 0.5  # 8 videos × 33 frames × 64×64: ~0.015 s on 2 idle cores, ~0.02 s on one


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def pca():
    return PCALatentSpace.fit(make_batch(100 + i, 16, 9)[0] for i in range(4))


def test_pca_patchify_round_trip():
    video, _ = make_batch(1, 2, 9, 32, 48)
    p = patchify(video)
    assert p.shape == (2, 3, 4, 6, 768)
    assert torch.equal(unpatchify(p), video)


def test_pca_round_trip_and_unit_latents(pca):
    held_out, _ = make_batch(4242, 32, 9)
    z = pca.encode(held_out)
    assert z.shape == (32, 16, 3, 8, 8) and z.dtype == torch.float32
    rec = pca.decode(z)
    assert rec.shape == held_out.shape and rec.abs().max() <= 1
    assert psnr(rec, held_out) > 25
    assert 0.8 < z.std().item() < 1.2 and abs(z.mean().item()) < 0.2
    per_channel = z.transpose(0, 1).flatten(1).std(1)
    assert per_channel.min() > 0.5 and per_channel.max() < 1.6
    train = torch.cat([make_batch(100 + i, 16, 9)[0] for i in range(4)])
    zt = pca.encode(train).transpose(0, 1).flatten(1)  # on the fit data: exactly zero mean, unit variance
    torch.testing.assert_close(zt.std(1), torch.ones(16), atol=1e-3, rtol=0)
    torch.testing.assert_close(zt.mean(1), torch.zeros(16), atol=1e-3, rtol=0)


def test_pca_geometry_causality_and_save(pca, tmp_path):
    video, _ = make_batch(9, 1, 13, 32, 40)
    z = pca.encode(video)
    assert z.shape == (1, 16, 4, 4, 5) and pca.decode(z).shape == (1, 3, 13, 32, 40)
    torch.testing.assert_close(pca.encode(video[:, :, :5]), z[:, :, :2])  # a prefix encodes to a prefix
    torch.testing.assert_close(pca.decode(z[:, :, :2]), pca.decode(z)[:, :, :5])
    assert pca.encode(video[:, :, :1]).shape == (1, 16, 1, 4, 5)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        pca.encode(video[:, :, :4])
    with pytest.raises(ValueError):
        pca.decode(torch.zeros(1, 8, 2, 4, 4))
    pca.save(tmp_path / "pca.safetensors")
    loaded = PCALatentSpace.load(tmp_path / "pca.safetensors")
    assert torch.equal(loaded.basis, pca.basis) and torch.equal(loaded.scale, pca.scale)
    torch.testing.assert_close(pca.basis @ pca.basis.T, torch.eye(16), atol=1e-5, rtol=0)


def test_pca_distill_vae_smoke(pca, tmp_path):
    from mmpl_core.data.distill_vae import distill, original_state_dict, save_vae
    from mmpl_core.vae import WanVAE, load_wan_vae

    history = []
    vae = distill(pca, minutes=0.0, frames=5, eval_videos=1, history=history, log=lambda s: None)
    assert len(history) == 1 and history[0]["step"] == 1 and math.isfinite(history[0]["dec_psnr"])
    assert not vae.training and vae.config.base_dim == 16
    video, _ = make_batch(3, 1, 9)
    z = WanVAE(vae).encode(video)
    assert z.shape == (1, 16, 3, 8, 8) and torch.isfinite(z).all()
    original = original_state_dict(vae)
    assert "decoder.middle.0.residual.0.gamma" in original and original["decoder.head.0.gamma"].shape[0] == 16
    for keys in (False, True):
        path = save_vae(vae, tmp_path / f"vae{int(keys)}.safetensors", original_keys=keys)
        assert path.with_name(path.stem + ".config.json").exists()
        loaded = load_wan_vae(str(path))
        assert loaded.vae.config.base_dim == 16
        torch.testing.assert_close(loaded.encode(video), z, atol=2e-2, rtol=0)  # fp16 weights
