"""Plan folders: strict validation on load, fuzzed (bytes, fields, file names, safetensors), and size limits."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from plan_samples import assert_same, folder_files, folder_state, make_plan
from safetensors.torch import save as st_save

from mmpl_core import plan_store
from mmpl_core.plan import Plan
from mmpl_core.plan_store import PLAN_FILE, PlanFileError, load_plan, save_plan


class Fuzzer:
    """Applies one mutation at a time to a saved plan folder, checks the load, and restores the folder."""

    def __init__(self, directory: Path, plan: Plan, tmp: Path):
        self.dir, self.plan, self.tmp, self.loaded = directory, plan, tmp, 0
        self.original = folder_files(directory)
        self.doc = json.loads(self.original[PLAN_FILE])
        self.segment_files = sorted(n for n in self.original if n.endswith(".safetensors"))

    def check(self, files: dict[str, bytes | None], *, must_fail: bool = False, same: bool = False, **kw) -> None:
        """Write `files` (None deletes), load, restore. Either PlanFileError, or (unless must_fail) a plan that
        re-saves to an identical plan.json (or equals the original plan when `same`). A failed load changes nothing."""
        for name, data in files.items():
            (self.dir / name).unlink(missing_ok=True)
            if data is not None:
                (self.dir / name).write_bytes(data)
        state = folder_state(self.dir)
        try:
            plan = load_plan(self.dir, **kw)
        except PlanFileError as e:
            assert str(self.dir) in str(e), e
        else:
            assert not must_fail, f"load accepted a broken folder: {list(files)}"
            self.loaded += 1
            if same:
                assert_same(self.plan, plan)
            else:
                out = self.tmp / f"resave{self.loaded}"
                save_plan(plan, out)
                assert json.loads((out / PLAN_FILE).read_bytes()) == json.loads((self.dir / PLAN_FILE).read_bytes())
                shutil.rmtree(out)
        assert folder_state(self.dir) == state, "a load modified the folder"
        for name in files:
            (self.dir / name).unlink(missing_ok=True)
            if name in self.original:
                (self.dir / name).write_bytes(self.original[name])

    def check_doc(self, mutate, **kw) -> None:
        doc = json.loads(json.dumps(self.doc))
        mutate(doc)
        self.check({PLAN_FILE: json.dumps(doc, ensure_ascii=False).encode()}, **kw)


def _paths(value, prefix=()):
    """Every (path, value) in a JSON document, containers included."""
    yield prefix, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, sub in items:
        yield from _paths(sub, prefix + (key,))


def _set(doc, path, value):
    for key in path[:-1]:
        doc = doc[key]
    if value is _DELETE:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


_DELETE = object()
WRONG = [None, [], {}, [1, "x"], 10**30, -(10**30), 2**63, -1, 0, "x", "", True, 1.5, -2.5, 1e308]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    plan = make_plan(i2v=True)
    save_plan(plan, tmp / "plan")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: None)  # durability is not what the fuzz tests check; keep re-saves fast
        yield Fuzzer(tmp / "plan", plan, tmp)


def test_plan_store_fuzz_plan_json_bytes(fuzz):
    rng, raw = random.Random(1234), fuzz.original[PLAN_FILE]
    for cut in sorted(rng.sample(range(raw.rindex(b"}")), 60)) + [0, 1]:
        fuzz.check({PLAN_FILE: raw[:cut]}, must_fail=True)
    for _ in range(300):
        data = bytearray(raw)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        fuzz.check({PLAN_FILE: bytes(data)})
    fuzz.check({PLAN_FILE: b"[" * 100000}, must_fail=True)
    fuzz.check({PLAN_FILE: b"\xff\xfe{}"}, must_fail=True)
    fuzz.check({PLAN_FILE: raw.replace(b'"seed": 7', b'"seed": NaN')}, must_fail=True)
    fuzz.check({PLAN_FILE: raw.replace(b'"seed": 7', b'"seed": 7, "seed": 8')}, must_fail=True)
    fuzz.check({PLAN_FILE: None}, must_fail=True)
    assert fuzz.loaded > 0  # some flips give another valid plan (a prompt letter, a seed digit): those re-save exactly


def test_plan_store_fuzz_fields(fuzz):
    for path, _ in list(_paths(fuzz.doc))[1:]:
        if len(path) == 4 and path[2] == "known_frames" and path[3] > 1:
            continue  # frames beyond the first two are alike
        if isinstance(path[-1], str):
            fuzz.check_doc(lambda d: _set(d, path, _DELETE), must_fail=True)
        for wrong in WRONG:
            fuzz.check_doc(lambda d: _set(d, path, wrong))
    fuzz.check_doc(lambda d: d.update(extra=1), must_fail=True)
    fuzz.check_doc(lambda d: d["segments"][0].update(extra=1), must_fail=True)
    fuzz.check_doc(lambda d: d.update(format="other"), must_fail=True)
    fuzz.check_doc(lambda d: d.update(format_version=5), must_fail=True)
    for layout in ("foo", "mmpl-t2v-9", "mmpl-i2v-99999999999999", "mmpl-i2v-13", "wan-i2v", "mmpl-i2v-٩"):
        fuzz.check_doc(lambda d: d.update(layout=layout), must_fail=True)
    fuzz.check_doc(lambda d: d.update(num_frames=10), must_fail=True)
    fuzz.check_doc(lambda d: d.update(latent_shape=[16, 8, 8]), must_fail=True)
    fuzz.check_doc(lambda d: d["settings"].update(height=2**62, width=2**62), must_fail=True)
    fuzz.check({}, expected_fingerprint="another", must_fail=True)
    fuzz.check({}, expected_latent_shape=[16, 4, 8], must_fail=True)
    fuzz.check({}, expected_fingerprint="fp-123", expected_latent_shape=(16, 4, 4), same=True)
    # statuses, seeds and known frames that disagree with the files
    fuzz.check_doc(lambda d: d["segments"][0].update(status="planned"), must_fail=True)
    fuzz.check_doc(lambda d: d["segments"][3].update(status="planned"), must_fail=True)
    fuzz.check_doc(lambda d: d["segments"][1].update(seed=-5), must_fail=True)
    fuzz.check_doc(lambda d: d["segments"][0]["known_frames"].pop(), must_fail=True)
    fuzz.check_doc(lambda d: d["segments"][0]["known_frames"].reverse(), must_fail=True)
    fuzz.check_doc(lambda d: d["segments"][1]["known_frames"].__setitem__(2, 3), must_fail=True)
    fuzz.check_doc(lambda d: d["segments"][2].update(known_frames=[0, 0]), must_fail=True)
    fuzz.check_doc(lambda d: d["segments"][2].update(known_frames=[0, 9]), must_fail=True)
    fuzz.check_doc(lambda d: d["segments"][3].update(known_frames=[0]), must_fail=True)
    fuzz.check_doc(lambda d: d["segments"][2].update(file=None), must_fail=True)
    fuzz.check_doc(lambda d: d.update(image_file=None), must_fail=True)


def test_plan_store_fuzz_file_names(fuzz, tmp_path):
    seg0, seg1 = fuzz.doc["segments"][0]["file"], fuzz.doc["segments"][1]["file"]
    outside = tmp_path / seg0
    outside.write_bytes(fuzz.original[seg0])
    evil = ["../x", "/etc/passwd", str(outside), f"{seg0}/..", f"./{seg0}", f"../plan/{seg0}", f"{seg0}\n", "",
            seg0.upper(), "segment_0.deadbeef.safetensors", "segment_000.deadbeef.safetensors", seg1, ".", "plan.json"]
    for name in evil:
        fuzz.check_doc(lambda d: d["segments"][0].update(file=name), must_fail=True)
        fuzz.check_doc(lambda d: d.update(image_file=name.replace("segment_000", "image")), must_fail=True)

    def swap(d):  # two segments trade files (and known frames, so only the file names give it away)
        a, b = d["segments"][0], d["segments"][1]
        for key in ("file", "known_frames", "status"):
            a[key], b[key] = b[key], a[key]
    fuzz.check_doc(swap, must_fail=True)
    # a symlink out of the folder is refused; one inside it is fine; a directory in place of a file is refused
    (fuzz.dir / seg0).unlink()
    (fuzz.dir / seg0).symlink_to(outside)
    fuzz.check({}, must_fail=True)
    (fuzz.dir / seg0).unlink()
    (fuzz.dir / "inside.bin").write_bytes(fuzz.original[seg0])
    (fuzz.dir / seg0).symlink_to("inside.bin")
    fuzz.check({}, same=True)
    (fuzz.dir / seg0).unlink()
    (fuzz.dir / "inside.bin").unlink()
    (fuzz.dir / seg0).mkdir()
    fuzz.check({}, must_fail=True)
    (fuzz.dir / seg0).rmdir()
    fuzz.check({seg0: None}, must_fail=True)
    fuzz.check({}, same=True)


def test_plan_store_fuzz_safetensors(fuzz):
    rng = random.Random(99)
    for name in fuzz.segment_files:
        raw = fuzz.original[name]
        header_end = 8 + int.from_bytes(raw[:8], "little")
        cuts = {0, 3, 8, 9, header_end // 2, header_end - 1, header_end, header_end + 1, (header_end + len(raw)) // 2}
        for cut in sorted(cuts | {len(raw) - 4, len(raw) - 1}):
            fuzz.check({name: raw[:cut]}, must_fail=True)
        fuzz.check({name: raw + b"\0" * 4}, same=True)  # trailing bytes after the data block are harmless
        fuzz.check({name: b""}, must_fail=True)
        for _ in range(25):  # header flips: refused, or harmless (e.g. padding space → tab)
            data = bytearray(raw)
            data[rng.randrange(header_end)] ^= 1 << rng.randrange(8)
            fuzz.check({name: bytes(data)}, same=True)
        for _ in range(10):  # data flips: caught by the content hash
            if header_end < len(raw):
                data = bytearray(raw)
                data[rng.randrange(header_end, len(raw))] ^= 1 << rng.randrange(8)
                fuzz.check({name: bytes(data)}, must_fail=True)
        fuzz.check({name: b"\xff" * 8 + raw[8:]}, must_fail=True)
    # tensors renamed, missing, extra, wrong dtype or shape, frames not matching known_frames, non-finite latents
    seg0 = fuzz.doc["segments"][0]["file"]
    lat, frames = fuzz.plan.segments[0].latents.latents.clone(), torch.arange(9)
    digest = plan_store._digest
    variants = [{"latent": lat, "frames": frames}, {"latents": lat},
                {"latents": lat, "frames": frames, "x": frames.clone()},
                {"latents": lat.double(), "frames": frames}, {"latents": lat.half(), "frames": frames},
                {"latents": lat, "frames": frames.int()},
                {"latents": lat[:, :8].contiguous(), "frames": frames[:8].clone()},
                {"latents": lat[:8], "frames": frames}, {"latents": lat, "frames": frames.flip(0)},
                {"latents": lat, "frames": frames + 1}]
    for tensors in variants:
        fuzz.check({seg0: st_save(tensors)}, must_fail=True)
    # a well-formed file (its name matches its content) whose frames disagree with plan.json's known_frames
    lat2 = fuzz.plan.segments[2].latents.latents[:, :2].contiguous()
    other = f"segment_002.{digest(lat2, torch.tensor([0, 2]))}.safetensors"
    doc = json.loads(json.dumps(fuzz.doc))
    doc["segments"][2]["file"] = other
    fuzz.check({other: st_save({"latents": lat2, "frames": torch.tensor([0, 2])}), PLAN_FILE: json.dumps(doc).encode()},
               must_fail=True)
    doc["segments"][2]["known_frames"] = [0, 2]  # and once plan.json agrees, it loads
    fuzz.check({other: st_save({"latents": lat2, "frames": torch.tensor([0, 2])}), PLAN_FILE: json.dumps(doc).encode()})
    for bad in (float("nan"), float("inf")):
        broken = lat.clone()
        broken[3, 4, 1, 2] = bad
        name = f"segment_000.{digest(broken, frames)}.safetensors"
        doc = json.loads(json.dumps(fuzz.doc))
        doc["segments"][0]["file"] = name
        fuzz.check({name: st_save({"latents": broken, "frames": frames}), PLAN_FILE: json.dumps(doc).encode()},
                   must_fail=True)


def test_plan_store_refuses_big_files_before_reading(fuzz, monkeypatch):
    seg0, real_open, opened = fuzz.doc["segments"][0]["file"], open, []

    def watching_open(path, *args, **kw):
        opened.append(Path(path).name)
        return real_open(path, *args, **kw)

    monkeypatch.setattr(plan_store, "open", watching_open, raising=False)
    assert plan_store.MAX_FILE_BYTES == 4 << 30
    monkeypatch.setattr(plan_store, "MAX_FILE_BYTES", 1 << 20)  # a sparse 2 MiB file stands for a 5 GiB one
    with open(fuzz.dir / "big", "wb") as f:
        f.truncate(2 << 20)
    os.replace(fuzz.dir / "big", fuzz.dir / seg0)
    with pytest.raises(PlanFileError, match=f"{seg0}: 2097152 bytes, over the 1048576 limit"):
        load_plan(fuzz.dir)
    assert seg0 not in opened and PLAN_FILE in opened
    fuzz.check({seg0: None})  # restores the segment file
    monkeypatch.setattr(plan_store, "MAX_JSON_BYTES", 100)
    with pytest.raises(PlanFileError, match="plan.json: .* over the 100 limit"):
        load_plan(fuzz.dir)


def test_plan_store_refuses_segments_too_big_to_hold(tmp_path):
    """Settings with a gigantic latent shape and a 0-frame segment file: refused, not a failed 10 TB allocation."""
    save_plan(make_plan(), tmp_path)
    doc = json.loads((tmp_path / PLAN_FILE).read_bytes())
    side = 1 << 17
    doc["settings"].update(height=8 * side, width=8 * side)
    doc["latent_shape"] = [16, side, side]
    tensors = {"latents": torch.zeros(16, 0, side, side), "frames": torch.zeros(0, dtype=torch.int64)}
    name = f"segment_000.{plan_store._digest(*tensors.values())}.safetensors"
    (tmp_path / name).write_bytes(st_save(tensors))
    doc["segments"] = [dict(doc["segments"][3], file=name, status="partial")]
    (tmp_path / PLAN_FILE).write_text(json.dumps(doc))
    with pytest.raises(PlanFileError, match="would exceed"):
        load_plan(tmp_path)
