"""Plan folders: exact round trips, older formats, incremental and crash-safe saving (validation on load is in
test_plan_store_fuzz.py)."""
from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest
import torch
from plan_samples import PROMPTS, assert_same, folder_files, make_plan, segment_latents

from mmpl_core import plan_store
from mmpl_core.layout import get_layout, mmpl_layout
from mmpl_core.plan import Plan, SegmentPlan
from mmpl_core.plan_store import PLAN_FILE, PlanFileError, PlanStore, load_plan, save_plan
from mmpl_core.segment import SegmentLatents


@pytest.mark.parametrize("i2v", [False, True])
def test_plan_store_round_trip(tmp_path, i2v):
    plan = make_plan(i2v)
    assert plan.statuses() == ["populated", "planned", "partial", "empty"]
    assert save_plan(plan, tmp_path / "p") == tmp_path / "p" / PLAN_FILE
    loaded = load_plan(tmp_path / "p", expected_fingerprint="fp-123", expected_latent_shape=(16, 4, 4))
    assert_same(plan, loaded)
    names = sorted(folder_files(tmp_path / "p"))
    assert [n.split(".")[0] for n in names] == ["image"] * i2v + ["plan", "segment_000", "segment_001", "segment_002"]
    raw = (tmp_path / "p" / PLAN_FILE).read_bytes()
    assert "Bär 🐻".encode() in raw  # prompts stay readable (UTF-8, not \u escapes)
    doc = json.loads(raw)
    assert doc["segments"][3] == {"prompt": PROMPTS[3], "seed": 99, "locked": False, "status": "empty", "file": None,
                                  "known_frames": [], "targets": [], "target_file": None}
    save_plan(loaded, tmp_path / "q")  # deterministic: the same plan gives the same bytes
    assert folder_files(tmp_path / "p") == folder_files(tmp_path / "q")


def test_plan_store_reads_format_version_2_as_16_bit_kv_cache(tmp_path):
    plan = make_plan(kv_dtype="float8_e4m3fn")
    save_plan(plan, tmp_path / "p")
    doc = json.loads((tmp_path / "p" / PLAN_FILE).read_bytes())
    assert (doc["format_version"], doc["settings"]["kv_dtype"]) == (4, "float8_e4m3fn")
    assert load_plan(tmp_path / "p").settings.kv_dtype == "float8_e4m3fn"
    doc["format_version"] = 2  # version 2 had no kv_dtype: K/V were stored in the compute dtype
    del doc["settings"]["kv_dtype"], doc["settings"]["noise_init"], doc["settings"]["loop"]
    for entry in doc["segments"]:
        del entry["targets"], entry["target_file"]
    (tmp_path / "p" / PLAN_FILE).write_text(json.dumps(doc))
    assert load_plan(tmp_path / "p").settings == dataclasses.replace(plan.settings, kv_dtype="compute")
    with pytest.raises(ValueError, match="kv_dtype must be one of"):
        dataclasses.replace(plan.settings, kv_dtype="int8")


def test_plan_store_reads_format_version_1_and_midpoint_statuses(tmp_path):
    plan = make_plan()
    save_plan(plan, tmp_path / "p")
    doc = json.loads((tmp_path / "p" / PLAN_FILE).read_bytes())
    doc["format_version"] = 1  # version 1 had no handoff / cfg_branches settings: terminal and batched
    del doc["settings"]["handoff"], doc["settings"]["cfg_branches"], doc["settings"]["kv_dtype"]
    del doc["settings"]["noise_init"], doc["settings"]["loop"]
    for entry in doc["segments"]:
        del entry["targets"], entry["target_file"]
    (tmp_path / "p" / PLAN_FILE).write_text(json.dumps(doc))
    old = load_plan(tmp_path / "p")
    assert (old.settings.handoff, old.settings.cfg_branches, old.settings.kv_dtype) == ("terminal", "batched", "compute")
    assert_same(plan, old)
    # With the midpoint handoff a segment other than the last is finished once its frames up to the midpoint are.
    layout = get_layout("mmpl-t2v-13")
    with pytest.raises(ValueError, match="no midpoint"):
        Plan.new(plan.layout, dataclasses.replace(plan.settings, handoff="midpoint"), ["x"], 2, "fp")
    upto_mid = SegmentLatents.empty(16, layout.num_frames, 4, 4).with_frames(
        range(layout.midpoint[-1] + 1), torch.zeros(16, layout.midpoint[-1] + 1, 4, 4))
    mid = Plan.new(layout, dataclasses.replace(plan.settings, handoff="midpoint"), ["x"], 3, "fp")
    mid = mid.with_segment(0, dataclasses.replace(mid.segments[0], latents=upto_mid))
    mid = mid.with_segment(2, dataclasses.replace(mid.segments[2], latents=upto_mid.keep_only(range(2))))
    assert mid.statuses() == ["populated", "empty", "partial"]
    save_plan(mid, tmp_path / "m")
    assert load_plan(tmp_path / "m").statuses() == mid.statuses()


def test_plan_store_wrapper_and_expectations(tmp_path):
    store = PlanStore(tmp_path / "deep" / "dir")
    assert not store.exists()
    with pytest.raises(PlanFileError, match="not found"):
        store.load()
    store.save(make_plan())
    assert store.exists()
    assert_same(make_plan(), store.load())
    with pytest.raises(PlanFileError, match="another model"):
        store.load(expected_fingerprint="other")
    with pytest.raises(PlanFileError, match="latent_shape"):
        store.load(expected_latent_shape=(16, 8, 8))
    (store.directory / PLAN_FILE).unlink()
    with pytest.raises(PlanFileError, match="missing"):
        store.load()


def test_plan_store_rewrites_only_changed_segments(tmp_path):
    plan = make_plan()
    save_plan(plan, tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "segment_000.txt").write_text("also mine")
    (tmp_path / ".mine.tmp").write_text("mine too")
    (tmp_path / ".segment_002.0123abcd.safetensors.k2j3h4g5.tmp").write_bytes(b"left by a killed save")
    before = {p.name: os.stat(p) for p in tmp_path.iterdir()}
    time.sleep(0.01)
    changed = plan.with_keyframe(1, 4, torch.ones(16, 4, 4))
    save_plan(changed, tmp_path)
    after = {p.name: os.stat(p) for p in tmp_path.iterdir()}
    removed, added = set(before) - set(after), set(after) - set(before)
    assert len(removed) == 2 and len(added) == 1 and ".segment_002.0123abcd.safetensors.k2j3h4g5.tmp" in removed
    assert [n[:12] for n in removed if not n.endswith(".tmp")] == [n[:12] for n in added] == ["segment_001."]
    assert {"notes.txt", "segment_000.txt", ".mine.tmp"} <= set(after)
    for name in set(before) & set(after) - {PLAN_FILE}:  # untouched files: same inode, same mtime
        assert (before[name].st_ino, before[name].st_mtime_ns) == (after[name].st_ino, after[name].st_mtime_ns)
    assert_same(changed, load_plan(tmp_path))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == [".mine.tmp"]


def test_plan_store_crash_during_save_keeps_previous_plan(tmp_path, monkeypatch):
    old, new = make_plan(seed=0), make_plan(seed=1).with_prompt(0, "changed")
    save_plan(old, tmp_path)
    snapshot = folder_files(tmp_path)
    real_replace = os.replace
    for victim in (".safetensors", PLAN_FILE):
        def failing_replace(src, dst, victim=victim):
            if str(dst).endswith(victim):
                raise OSError("disk on fire")
            return real_replace(src, dst)

        monkeypatch.setattr(plan_store.os, "replace", failing_replace)
        with pytest.raises(OSError, match="disk on fire"):
            save_plan(new, tmp_path)
        monkeypatch.setattr(plan_store.os, "replace", real_replace)
        assert_same(old, load_plan(tmp_path))
        assert (tmp_path / PLAN_FILE).read_bytes() == snapshot[PLAN_FILE]
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    save_plan(new, tmp_path)  # the next save succeeds and removes what the failed ones left behind
    assert_same(new, load_plan(tmp_path))
    assert len(folder_files(tmp_path)) == 1 + 2  # plan.json + segments 1 and 2 (with_prompt emptied segment 0)


def test_plan_store_save_refuses_plans_it_could_not_load(tmp_path):
    plan, layout = make_plan(), get_layout("mmpl-t2v-9")
    nan = plan.segments[0].latents.latents.clone()
    nan[0, 0, 0, 0] = float("nan")
    bad_plans = {
        "seed": plan.reroll(3, -1),
        "non-finite": plan.with_segment(0, SegmentPlan("x", 1, SegmentLatents(nan, plan.segments[0].latents.known))),
        "latents must be": plan.with_segment(
            0, SegmentPlan("x", 1, segment_latents(get_layout("mmpl-t2v-11"), [0], None))),
        "not registered": Plan(mmpl_layout(9, mid=0, name="mmpl-t2v-9"), plan.settings, plan.segments[3:], "fp"),
        "unknown layout": Plan(mmpl_layout(9, name="custom"), plan.settings, plan.segments[3:], "fp"),
        "image_latent": Plan(layout, plan.settings, plan.segments, "fp", image_latent=torch.zeros(16, 1, 4, 4)),
        "fingerprint": dataclasses.replace(plan, model_fingerprint=None),
    }
    for match, bad in bad_plans.items():
        with pytest.raises(ValueError, match=match):
            save_plan(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []
