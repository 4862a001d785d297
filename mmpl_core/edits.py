"""Hand edits of a plan as data: a JSON list that front ends store (ComfyUI keeps it in a widget, so a shared
workflow reproduces the edits) and `apply_edits` replays onto a plan.

    {"edits": [{"op": "lock", "segment": 0},
               {"op": "reroll", "segment": 2, "seed": 1234},
               {"op": "prompt", "segment": 3, "text": "a red circle bounces"},
               {"op": "replace", "segment": 1, "frame": 10, "image": 0},
               {"op": "target", "segment": 2, "role": "terminal", "image": 1},
               {"op": "target", "segment": 3, "role": "mid", "from": [0, 11]}]}

Segments are 0-based; `frame` is a latent index that must be one of the layout's keyframes; `image` indexes the
images handed to `apply_edits` (or `"file"` names one, resolved by the front end). "replace" swaps a planned keyframe
and keeps the rest of the segment's plan; "target" gives a keyframe (`role` mid or terminal, or `frame`) from an image
or `from` [segment, frame] of an earlier segment, and the segment is planned anew with it held. Re-planning after
edits starts at `Plan.replan_start()`: segments before the first edit stay bit-identical.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .keyframes import target_frame
from .plan import KeyframeTarget, Plan

OPS = ("lock", "unlock", "reroll", "prompt", "replace", "target")


class EditError(ValueError):
    """An edit that cannot apply; the message names the edit (its position in the list) and the field."""


@dataclass(frozen=True)
class Edit:
    op: str
    segment: int
    seed: int | None = None
    text: str | None = None
    frame: int | None = None
    image: int | str | None = None  # an index into the supplied images, or a file name the front end resolves
    role: str | None = None  # a target's keyframe by role (mid, terminal) instead of `frame`
    source: tuple[int, int] | None = None  # a target taken from keyframe (segment, frame) of an earlier segment


def _field(entry: dict, name: str, kind, where: str, required: bool = True):
    value = entry.get(name)
    if value is None:
        if required:
            raise EditError(f"{where}: '{entry.get('op')}' needs '{name}'")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        kinds = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise EditError(f"{where}: '{name}' must be {kinds}, got {value!r}")
    return value


def parse_edits(text: str) -> list[Edit]:
    """The edits of a JSON document ('' or '{}' → none); every problem raises EditError naming the edit."""
    if not text.strip():
        return []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise EditError(f"edits are not valid JSON: {err}") from err
    entries = doc.get("edits", []) if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise EditError("edits must be a list, or an object with an 'edits' list")
    edits = []
    for i, entry in enumerate(entries):
        where = f"edit {i}"
        if not isinstance(entry, dict) or entry.get("op") not in OPS:
            raise EditError(f"{where}: expected an object with 'op' in {OPS}, got {entry!r}")
        op = entry["op"]
        segment = _field(entry, "segment", int, where)
        source = _field(entry, "from", list, where, required=False)
        if source is not None and (len(source) != 2 or not all(type(v) is int for v in source)):
            raise EditError(f"{where}: 'from' must be [segment, frame] (two ints), got {source!r}")
        target = op == "target"
        edits.append(Edit(
            op, segment,
            seed=_field(entry, "seed", int, where, required=op == "reroll"),
            text=_field(entry, "text", str, where, required=op == "prompt"),
            frame=_field(entry, "frame", int, where, required=op == "replace" or (target and "role" not in entry)),
            image=_field(entry, "image", (int, str), where, required=op == "replace" or (target and source is None)),
            role=_field(entry, "role", str, where, required=False),
            source=None if source is None else tuple(source),
        ))
    return edits


def apply_edits(
    plan: Plan,
    edits: Sequence[Edit],
    *,
    encode_image: Callable[[int | str, int], torch.Tensor] | None = None,
    encode_prompt: Callable[[str], str] | None = None,
) -> Plan:
    """Replay `edits` in order onto `plan` (a new plan; `plan` is untouched).

    encode_image(image_ref, frame) → latent [C, h, w] for a "replace" edit; encode_prompt(text) → the prompt name
    the plan stores (e.g. an embedding label); without it the text itself is stored.
    """
    for i, edit in enumerate(edits):
        where = f"edit {i} ({edit.op} segment {edit.segment})"
        if not 0 <= edit.segment < len(plan):
            raise EditError(f"{where}: the plan has segments 0..{len(plan) - 1}")
        try:
            if edit.op in ("lock", "unlock"):
                if edit.op == "lock" and plan.segments[edit.segment].latents is None:
                    raise EditError("the segment is not planned yet, so there is nothing to lock")
                plan = plan.lock(edit.segment, edit.op == "lock")
            elif edit.op == "reroll":
                if edit.seed < 0:
                    raise EditError(f"seed must be >= 0, got {edit.seed}")
                plan = plan.reroll(edit.segment, edit.seed)
            elif edit.op == "prompt":
                name = encode_prompt(edit.text) if encode_prompt is not None else edit.text
                plan = plan.with_prompt(edit.segment, name)
            elif edit.op == "target":
                plan = plan.with_target(edit.segment, _target(plan, edit, encode_image))
            else:
                if encode_image is None:
                    raise EditError("replacing a keyframe needs images (and a VAE to encode them)")
                if edit.frame not in plan.layout.keyframes:
                    raise EditError(f"frame {edit.frame} is not a keyframe; keyframes are {list(plan.layout.keyframes)}")
                plan = plan.with_keyframe(edit.segment, edit.frame, encode_image(edit.image, edit.frame))
        except EditError as err:
            raise EditError(f"{where}: {err}") from err
        except (ValueError, IndexError) as err:
            raise EditError(f"{where}: {err}") from err
    return plan


def _target(plan: Plan, edit: Edit, encode_image) -> KeyframeTarget:
    frame = target_frame(plan.layout, edit.role if edit.role is not None else edit.frame)
    if edit.source is not None:
        return KeyframeTarget(frame, source=edit.source, label=f"S{edit.source[0] + 1} f{edit.source[1]}")
    if encode_image is None:
        raise EditError("a target from an image needs images (and a VAE to encode them)")
    return KeyframeTarget(frame, encode_image(edit.image, frame),
                          label=f"image {edit.image}" if isinstance(edit.image, int) else edit.image)
