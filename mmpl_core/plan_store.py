"""Save and load a `Plan` as a folder (format version 4; versions 1 to 3 are read), so long runs can be resumed, inspected and edited.

plan.json (written last, atomically) holds settings, prompts, seeds and statuses. Each planned segment k has a file
segment_<k:03d>.<8 hex>.safetensors: "latents" float32 [C, len(known), h, w] (its known frames, sorted) and "frames"
int64; I2V adds image.<8 hex>.safetensors ("image_latent"). A segment's given keyframes (targets) are listed in
plan.json (frame, label, source segment and frame for one taken from an earlier segment); those given as latents are
in targets_<k:03d>.<8 hex>.safetensors ("latents", "frames"). The hex digits start a sha256 of the file's tensors: a
changed segment gets a new file, an unchanged one is reused, a file not matching its name is caught on load. A failed
save leaves the previous plan loadable; a load never modifies the folder and raises `PlanFileError` (naming file,
field, expected and found) for any problem. One writer per folder at a time.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from reprlib import repr as _brief

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes

from .layout import get_layout
from .plan import GenerationSettings, KeyframeTarget, Plan, SegmentPlan, required_frames
from .sampling import SamplerConfig
from .segment import SegmentLatents

FORMAT, FORMAT_VERSION, PLAN_FILE = "mmpl-plan", 4, "plan.json"
MAX_FILE_BYTES = 4 << 30  # a tensor file larger than this is refused before it is read
MAX_JSON_BYTES = 64 << 20
MAX_LAYOUT_FRAMES = 1024  # keeps get_layout("mmpl-t2v-<huge>") from building a gigantic layout
_TENSOR_FILE = r"(segment_\d{3,}|targets_\d{3,}|image)\.[0-9a-f]{8}\.safetensors"  # below: those + temporaries of a killed save
_OWN_FILE_RE = re.compile(rf"{_TENSOR_FILE}|\.({_TENSOR_FILE}|plan\.json)\.[a-z0-9_]{{8}}\.tmp", re.ASCII)
_LAYOUT_RE = re.compile(r"mmpl-(?:t2v|i2v)-(\d+)", re.ASCII)
_INT_LIMIT = 1 << 63
_IS = {"int": lambda v: type(v) is int and -_INT_LIMIT <= v < _INT_LIMIT, "str": lambda v: type(v) is str,
       "int>=0": lambda v: type(v) is int and 0 <= v < _INT_LIMIT, "bool": lambda v: type(v) is bool,
       "float": lambda v: (type(v) is float and math.isfinite(v)) or (type(v) is int and abs(v) < _INT_LIMIT)}
_DTYPES = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8")}
# The schema of plan.json: a dict is an object with exactly these keys, [spec] a list of spec, "T?" T or null.
_SAMPLER = {"solver": "str", "steps": "int", "shift": "float", "guidance": "float"}
_SETTINGS = {"seed": "int>=0", "height": "int", "width": "int", "bridge": "str", "color_anchor": "float",
             "boundary_weight": "float", "fps": "int", "handoff": "str", "cfg_branches": "str", "kv_dtype": "str",
             "noise_init": "str", "loop": "bool",
             "sampler": _SAMPLER}
# Settings added by each format version, with the values that older plan folders were made with.
_SETTINGS_ADDED = {2: {"handoff": "terminal", "cfg_branches": "batched"}, 3: {"kv_dtype": "compute"},
                   4: {"noise_init": "official", "loop": False}}
_SEGMENT_ADDED = {4: {"targets": [], "target_file": None}}  # per segment, as _SETTINGS_ADDED
_READABLE_VERSIONS = (1, 2, 3, FORMAT_VERSION)
_TARGET = {"frame": "int", "label": "str", "source": ["int"]}  # source: [] (a latent) or [segment, frame]
_SEGMENT = {"prompt": "str", "seed": "int>=0", "locked": "bool", "status": "str", "file": "str?",
            "targets": [_TARGET], "target_file": "str?",
            "known_frames": ["int"]}
_SCHEMA = {"format": "str", "format_version": "int", "layout": "str", "num_frames": "int", "latent_shape": ["int"],
           "settings": _SETTINGS, "model_fingerprint": "str", "negative_prompt": "str", "image_file": "str?",
           "segments": [_SEGMENT]}


class PlanFileError(ValueError):
    """Any problem with a plan folder; the message names the file and what was expected."""


def _require(ok, message, error: type[Exception] = PlanFileError) -> None:
    """Raise `error(message)` unless ok; `message` may be a callable, for messages costly to build."""
    if not ok:
        raise error(message() if callable(message) else message)


def _check_schema(value, spec, where: str, file) -> None:
    """Raise PlanFileError unless `value` has the structure and types `spec` describes (see _SCHEMA)."""
    if isinstance(spec, dict):
        _require(isinstance(value, dict), lambda: f"{file}: field {where} expected an object, found {_brief(value)}")
        missing, extra = sorted(set(spec) - set(value)), sorted(set(value) - set(spec))
        _require(not (missing or extra), f"{file}: object {where} has missing fields {missing}, unknown {extra}")
        for key, sub in spec.items():
            _check_schema(value[key], sub, f"{where}.{key}" if where != "<root>" else key, file)
    elif isinstance(spec, list):
        _require(isinstance(value, list), lambda: f"{file}: field {where} expected a list, found {_brief(value)}")
        for i, item in enumerate(value):
            _check_schema(item, spec[0], f"{where}[{i}]", file)
    else:
        _require((spec.endswith("?") and value is None) or _IS[spec.rstrip("?")](value),
                 lambda: f"{file}: field {where} expected {spec.replace('?', ' or null')}, found {_brief(value)}")


def _parse_json(data: bytes, file, what: str):
    """JSON without duplicate keys (NaN/Infinity parse, but fail every schema and shape check)."""
    def unique(pairs):
        _require(len({k for k, _ in pairs}) == len(pairs), f"duplicate key among {[k for k, _ in pairs]}", ValueError)
        return dict(pairs)

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PlanFileError(f"{file}: {what} is not valid JSON ({e})") from None


def _read_file(path: Path, directory: Path, limit: int) -> bytes:
    """A regular file's bytes, refusing symlinks that leave `directory` and files over `limit` bytes."""
    try:
        _require(not path.is_symlink() or Path(os.path.realpath(path)).parent == Path(os.path.realpath(directory)),
                 f"{path}: symlink points outside the plan folder (to {os.path.realpath(path)})")
        _require(path.is_file() or not path.exists(), f"{path}: expected a regular file")
        _require(path.stat().st_size <= limit, f"{path}: {path.stat().st_size} bytes, over the {limit} limit")
        with open(path, "rb") as f:
            return f.read(limit)
    except FileNotFoundError:
        raise PlanFileError(f"{path}: file is missing") from None
    except OSError as e:
        raise PlanFileError(f"{path}: cannot read ({e})") from None


def _read_tensors(directory: Path, where: str, name: str, prefix: str, spec: dict) -> dict[str, torch.Tensor]:
    """The tensors of file `name` (plan.json's field `where`): it must be called `<prefix>.<8 hex>.safetensors`, hold
    exactly `spec` = {tensor: (dtype code, shape)}, be finite and hash to the 8 hex digits."""
    match = re.fullmatch(rf"{prefix}\.([0-9a-f]{{8}})\.safetensors", name, re.ASCII)
    _require(match, f"{where} expected a file name like {prefix}.<8 hex>.safetensors, found {name!r}")
    path = directory / name
    data = _read_file(path, directory, MAX_FILE_BYTES)
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    _require(0 <= n <= len(data) - 8, f"{path}: truncated or corrupt safetensors file ({len(data)} bytes, header {n})")
    header = _parse_json(data[8 : 8 + n], path, "safetensors header")
    _require(isinstance(header, dict), f"{path}: safetensors header expected an object, found {_brief(header)}")
    header.pop("__metadata__", None)
    _require(set(header) == set(spec), f"{path}: expected tensors {sorted(spec)}, found {sorted(header)}")
    body, out = len(data) - 8 - n, {}
    for key, (code, shape) in spec.items():
        entry, dtype = header[key], _DTYPES[code]
        found = (entry.get("dtype"), entry.get("shape")) if isinstance(entry, dict) else entry
        _require(found == (code, shape), f"{path}: tensor {key!r} expected {code} {shape}, found {_brief(found)}")
        count, offsets = math.prod(shape), entry.get("data_offsets")
        _require(isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                 and 0 <= offsets[0] and offsets[1] - offsets[0] == count * dtype.itemsize and offsets[1] <= body,
                 f"{path}: tensor {key!r} has bad data_offsets {_brief(offsets)} (data block is {body} bytes)")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=8 + n + offsets[0]).reshape(shape)
        out[key] = torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))
    _require(all(torch.isfinite(t).all() for t in out.values()), f"{path}: latents expected finite, found NaN or inf")
    digest = _digest(*out.values())
    _require(digest == match[1], f"{path}: content hash {digest} does not match the {match[1]} in its name")
    return out


def _digest(*tensors: torch.Tensor) -> str:
    """First 8 hex digits of a sha256 over the tensors' dtypes, shapes and little-endian bytes."""
    h = hashlib.sha256()
    for array in (t.detach().cpu().contiguous().numpy() for t in tensors):
        h.update(f"{array.dtype.str[1:]}{list(array.shape)};".encode())
        h.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()[:8]


def _plan_doc(plan: Plan) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """plan.json's content and the tensors of each file it names; ValueError for a plan that would not load."""
    layout, (c, h, w), n = plan.layout, plan.settings.latent_shape, plan.layout.num_frames
    _require(get_layout(layout.name) == layout, f"cannot save: layout {layout.name!r} is not registered", ValueError)
    files, image_file, segments = {}, None, []
    image = None if plan.image_latent is None else plan.image_latent.detach().to("cpu", torch.float32).contiguous()
    if image is not None or layout.image_frames:
        _require(image is not None and layout.image_frames and tuple(image.shape) == (c, layout.image_frames, h, w)
                 and torch.isfinite(image).all(), f"cannot save: layout {layout.name} takes a finite image_latent of "
                 f"shape [{c}, {layout.image_frames}, {h}, {w}] (none for image_frames=0)", ValueError)
        image_file = f"image.{_digest(image)}.safetensors"
        files[image_file] = {"image_latent": image}
    for k, seg in enumerate(plan.segments):
        entry = {"prompt": seg.prompt, "seed": seg.seed, "locked": seg.locked, "status": plan.status(k),
                 "file": None, "known_frames": [], "target_file": None,
                 "targets": [{"frame": t.frame, "label": t.label, "source": list(t.source or ())} for t in seg.targets]}
        given = [t for t in seg.targets if t.latent is not None]
        if given:
            latents = torch.stack([t.latent.detach().to("cpu", torch.float32) for t in given], dim=1).contiguous()
            _require(tuple(latents.shape) == (c, len(given), h, w) and torch.isfinite(latents).all(),
                     f"cannot save: segment {k} target latents must be finite [{c}, {h}, {w}]", ValueError)
            frames = torch.tensor([t.frame for t in given], dtype=torch.int64)
            entry["target_file"] = f"targets_{k:03d}.{_digest(latents, frames)}.safetensors"
            files[entry["target_file"]] = {"latents": latents, "frames": frames}
        if seg.latents is not None:
            known, latents = sorted(seg.latents.known), seg.latents.latents.detach()
            _require(tuple(latents.shape) == (c, n, h, w) and all(type(f) is int and 0 <= f < n for f in known),
                     f"cannot save: segment {k} latents must be [{c}, {n}, {h}, {w}], known frames < {n}", ValueError)
            latents = latents[:, known].to("cpu", torch.float32).contiguous()
            _require(torch.isfinite(latents).all(), f"cannot save: segment {k} has non-finite latents", ValueError)
            frames = torch.tensor(known, dtype=torch.int64)
            entry["file"], entry["known_frames"] = f"segment_{k:03d}.{_digest(latents, frames)}.safetensors", known
            files[entry["file"]] = {"latents": latents, "frames": frames}
        segments.append(entry)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "layout": layout.name, "num_frames": n,
           "latent_shape": [c, h, w], "settings": dataclasses.asdict(plan.settings),
           "model_fingerprint": plan.model_fingerprint, "negative_prompt": plan.negative_prompt,
           "image_file": image_file, "segments": segments}
    _check_schema(doc, _SCHEMA, "<root>", "cannot save plan")  # a PlanFileError, hence a ValueError
    return doc, files


def _write_atomic(path: Path, data: bytes) -> None:
    """Write a temporary file next to `path`, fsync it and rename it over `path`: no partial file is ever visible."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX; skipped where unsupported)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_plan(plan: Plan, directory) -> Path:
    """Save `plan` into `directory` (created if needed); returns its plan.json. Writes the tensor files not already
    there (by name, i.e. by content hash), then plan.json atomically, then deletes the segment/image files (and
    temporaries of a killed save) that plan.json no longer names. Other files are left alone."""
    directory, (doc, files) = Path(directory), _plan_doc(plan)
    text = (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")  # may fail: before any write
    directory.mkdir(parents=True, exist_ok=True)
    for name, tensors in files.items():
        if not ((directory / name).is_file() and not (directory / name).is_symlink()):
            _write_atomic(directory / name, safetensors_bytes(tensors))
    _write_atomic(directory / PLAN_FILE, text)
    for entry in directory.iterdir():
        if _OWN_FILE_RE.fullmatch(entry.name) and entry.name not in files and (entry.is_symlink() or entry.is_file()):
            entry.unlink(missing_ok=True)
    return directory / PLAN_FILE


def load_plan(directory, *, expected_fingerprint: str | None = None, expected_latent_shape=None) -> Plan:
    """Load and fully validate the plan in `directory`; any problem raises PlanFileError. expected_fingerprint /
    expected_latent_shape: the current model's, to refuse a plan made with another model."""
    directory = Path(directory)
    _require(directory.is_dir(), f"{directory}: plan folder not found (expected a directory holding {PLAN_FILE})")
    file = directory / PLAN_FILE
    doc = _parse_json(_read_file(file, directory, MAX_JSON_BYTES), file, "plan file")
    for key, values in (("format", (FORMAT,)), ("format_version", _READABLE_VERSIONS)):
        found = doc.get(key) if isinstance(doc, dict) else doc
        _require(type(found) is type(values[-1]) and found in values,
                 f"{file}: field {key} expected {' or '.join(map(repr, values))}, found {_brief(found)} "
                 "(not a supported plan folder)")
    if isinstance(doc.get("settings"), dict):
        for version, added in _SETTINGS_ADDED.items():
            if doc["format_version"] < version:
                doc["settings"] = {**doc["settings"], **added}
    for version, added in _SEGMENT_ADDED.items():
        if doc["format_version"] < version and isinstance(doc.get("segments"), list):
            doc["segments"] = [{**s, **added} if isinstance(s, dict) else s for s in doc["segments"]]
    _check_schema(doc, _SCHEMA, "<root>", file)
    name, match = doc["layout"], _LAYOUT_RE.fullmatch(doc["layout"])
    try:
        _require(not match or int(match[1]) <= MAX_LAYOUT_FRAMES, f"more than {MAX_LAYOUT_FRAMES} frames")
        layout = get_layout(name)
        _require(layout.name == name, f"expected its canonical name {layout.name!r}")
    except ValueError as e:
        raise PlanFileError(f"{file}: field layout {name!r}: {e}") from None
    _require(doc["num_frames"] == layout.num_frames,
             f"{file}: field num_frames expected {layout.num_frames} (layout {name}), found {doc['num_frames']}")
    typed = lambda values, spec: {k: float(v) if spec[k] == "float" else v for k, v in values.items()}  # noqa: E731
    try:
        sampler = SamplerConfig(**typed(doc["settings"]["sampler"], _SAMPLER))
        settings = GenerationSettings(**{**typed(doc["settings"], _SETTINGS), "sampler": sampler})
    except ValueError as e:
        raise PlanFileError(f"{file}: field settings is invalid: {e}") from None
    c, h, w = shape = settings.latent_shape
    _require(doc["latent_shape"] == list(shape),
             f"{file}: field latent_shape expected {list(shape)} (from settings), found {doc['latent_shape']}")
    _require(expected_latent_shape is None or tuple(expected_latent_shape) == shape,
             f"{file}: field latent_shape expected {expected_latent_shape} (the model's), found {list(shape)}")
    _require(expected_fingerprint is None or doc["model_fingerprint"] == expected_fingerprint,
             f"{file}: field model_fingerprint expected {expected_fingerprint!r}, found "
             f"{doc['model_fingerprint']!r}: plan was made with another model")
    _require(4 * c * layout.num_frames * h * w <= MAX_FILE_BYTES,
             f"{file}: segments of shape {[c, layout.num_frames, h, w]} would exceed {MAX_FILE_BYTES} bytes")
    image, image_file = None, doc["image_file"]
    _require((image_file is None) == (layout.image_frames == 0),
             f"{file}: field image_file expected {'null' if image_file else 'a file name'} for layout {name} "
             f"(image_frames={layout.image_frames}), found {_brief(image_file)}")
    if image_file is not None:
        image = _read_tensors(directory, f"{file}: field image_file", image_file, "image",
                              {"image_latent": ("F32", [c, layout.image_frames, h, w])})["image_latent"]
    count = len(doc["segments"])
    try:
        required = [required_frames(layout, settings.handoff, k, count) for k in range(count)]
    except ValueError as e:
        raise PlanFileError(f"{file}: field settings.handoff: {e}") from None
    segments = tuple(_load_segment(directory, file, k, entry, layout, shape, required[k])
                     for k, entry in enumerate(doc["segments"]))
    return Plan(layout, settings, segments, doc["model_fingerprint"], doc["negative_prompt"], image)


def _load_segment(directory: Path, file: Path, k: int, entry: dict, layout, shape, required) -> SegmentPlan:
    where, (c, h, w), known, name = f"{file}: field segments[{k}]", shape, entry["known_frames"], entry["file"]
    _require(known == sorted(set(known)) and all(0 <= f < layout.num_frames for f in known) and (name or not known),
             f"{where}.known_frames expected sorted distinct frames < {layout.num_frames} (none without a file), "
             f"found {known}")
    latents = None
    if name is not None:
        tensors = _read_tensors(directory, f"{where}.file", name, f"segment_{k:03d}",
                                {"latents": ("F32", [c, len(known), h, w]), "frames": ("I64", [len(known)])})
        _require(tensors["frames"].tolist() == known, f"{directory / name}: tensor 'frames' expected {known} (its "
                                                      f"known_frames), found {tensors['frames'].tolist()}")
        full = SegmentLatents.empty(c, layout.num_frames, h, w).latents
        full[:, known] = tensors["latents"]
        latents = SegmentLatents(full, frozenset(known))
    segment = SegmentPlan(entry["prompt"], entry["seed"], latents, entry["locked"],
                          _load_targets(directory, where, k, entry, layout, shape))
    status = segment.status(layout, required)
    _require(status == entry["status"], f"{where}.status expected {status!r} (from its frames), found {entry['status']!r}")
    return segment


def _load_targets(directory: Path, where: str, k: int, entry: dict, layout, shape) -> tuple[KeyframeTarget, ...]:
    (c, h, w), targets, name = shape, entry["targets"], entry["target_file"]
    frames = [t["frame"] for t in targets]
    _require(frames == sorted(set(frames)) and set(frames) <= set(layout.keyframes) - set(range(layout.context_frames)),
             f"{where}.targets expected sorted distinct planned keyframes of {layout.name}, found frames {frames}")
    for i, t in enumerate(targets):
        source = t["source"]
        _require(not source or (len(source) == 2 and 0 <= source[0] < k and source[1] in layout.keyframes),
                 f"{where}.targets[{i}].source expected [] or [an earlier segment, one of its keyframes], found {source}")
    given = [t["frame"] for t in targets if not t["source"]]
    latents = None
    _require((name is None) == (not given), f"{where}.target_file expected {'a file' if given else 'null'} for "
                                            f"targets given as latents {given}, found {_brief(name)}")
    if name is not None:
        tensors = _read_tensors(directory, f"{where}.target_file", name, f"targets_{k:03d}",
                                {"latents": ("F32", [c, len(given), h, w]), "frames": ("I64", [len(given)])})
        _require(tensors["frames"].tolist() == given, f"{directory / name}: tensor 'frames' expected {given}, found "
                                                      f"{tensors['frames'].tolist()}")
        latents = dict(zip(given, tensors["latents"].unbind(1)))
    return tuple(KeyframeTarget(t["frame"], None if t["source"] else latents[t["frame"]],
                                tuple(t["source"]) if t["source"] else None, t["label"]) for t in targets)


class PlanStore:
    """A plan folder, for saving a plan again and again during a long run (each save is a `save_plan`)."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def save(self, plan: Plan) -> None:
        save_plan(plan, self.directory)

    def load(self, **kw) -> Plan:
        return load_plan(self.directory, **kw)

    def exists(self) -> bool:
        return (self.directory / PLAN_FILE).is_file()
