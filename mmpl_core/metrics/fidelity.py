"""Fidelity to the synthetic world's rules: the prompted objects (count and colours) stay in the picture."""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from ..data.synthetic import Scene, detect_objects
from .bins import TimeBins, check_frames


def frame_objects(frame: np.ndarray) -> list[str]:
    """Colours of the objects found in one uint8 RGB frame [H, W, 3] (colour segmentation of the synthetic world)."""
    tensor = torch.from_numpy(frame).permute(2, 0, 1).float() / 127.5 - 1.0
    return [colour for colour, *_ in detect_objects(tensor)]


def world_fidelity(frames: np.ndarray, bins: TimeBins, scene: Scene, *, stride: int = 4) -> dict[str, np.ndarray]:
    """Per bin, over every `stride`-th frame, against the scene the prompt describes:

    recall: share of the prompted colours that are found.
    spurious: mean number of found objects whose colour the prompt does not name.
    count_ok: share of frames with exactly the prompted number of objects.
    exact: share of frames whose found objects are exactly the prompted ones (one per prompted colour, no other).
    """
    check_frames(frames, bins)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    wanted = Counter(o.colour for o in scene.objects)
    series = {name: np.full(len(frames), np.nan) for name in ("recall", "spurious", "count_ok", "exact")}
    for t in range(0, len(frames), stride):
        found = Counter(frame_objects(frames[t]))
        series["recall"][t] = sum(1 for c in wanted if found[c]) / len(wanted)
        series["spurious"][t] = sum(n for c, n in found.items() if c not in wanted)
        series["count_ok"][t] = float(sum(found.values()) == sum(wanted.values()))
        series["exact"][t] = float(found == wanted)
    return {name: bins.reduce(values) for name, values in series.items()}
