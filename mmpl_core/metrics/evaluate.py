"""All metrics of one video, per time bin, with the thresholds that flag a defect kept as data."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.synthetic import Scene
from .bins import TimeBins, check_frames
from .colour import colour_drift, sharpness
from .fidelity import world_fidelity
from .temporal import flow_metrics, seams


@dataclass(frozen=True)
class Thresholds:
    """When a metric flags a video (any bin past the first beyond the limit).

    delta_e: CIEDE2000 of the mean colour against bin 1 (2.3 ≈ just noticeable; 5 = clearly visible).
    hist_emd: Lab units of the per-channel earth mover's distance against bin 1.
    sharpness_loss: 1 − sharpness relative to bin 1 (0.3 = 30 % of the Laplacian variance gone).
    seam: a join's frame difference over the median within its two segments.
    jerk: flow change over flow magnitude (steady motion ≈ 0.2–0.4 on the synthetic world, shakes ≈ 1).
    freeze: share of frame pairs without motion in one bin.
    recall: share of prompted object colours found (synthetic world only; below this flags).
    """

    delta_e: float = 5.0
    hist_emd: float = 5.0
    sharpness_loss: float = 0.3
    seam: float = 2.0
    jerk: float = 0.8
    freeze: float = 0.2
    recall: float = 0.75
    freeze_speed: float = 0.1  # px/frame: 99th-percentile flow speed below which a frame pair counts as frozen


@dataclass
class VideoQuality:
    """Per-bin series (lists of floats, NaN where undefined), flags, and the bins' times in seconds."""

    series: dict[str, list[float]]
    flags: dict[str, bool]
    seconds: list[float]
    seam_ratio: float  # mean over joins of the seam score (join difference over the within-segment median)
    seam_block_ratio: float  # mean over joins of the join difference over the within-segment latent-boundary median
    extras: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return _jsonable(asdict(self))


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else round(float(value), 6)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _beyond(values: np.ndarray, limit: float, below: bool = False) -> bool:
    later = np.asarray(values[1:], dtype=np.float64)
    later = later[np.isfinite(later)]
    return bool(((later < limit) if below else (later > limit)).any())


def evaluate_video(frames: np.ndarray, bins: TimeBins, scene: Scene | None = None,
                   thresholds: Thresholds = Thresholds()) -> VideoQuality:
    """Every metric of a video [T, H, W, 3] uint8 over `bins`; world fidelity too when the prompt's `scene` is given."""
    check_frames(frames, bins)
    colour, sharp, seam = colour_drift(frames, bins), sharpness(frames, bins), seams(frames, bins)
    flow = flow_metrics(frames, bins, freeze_speed=thresholds.freeze_speed)
    series = {
        "delta_e": colour["delta_e"], "hist_emd": colour["hist_emd"],
        "sharpness": sharp["sharpness"], "sharpness_rel": sharp["relative"], "sharpness_loss": sharp["loss"],
        "seam": seam["per_bin"], "seam_block": np.concatenate([[np.nan], seam["block_score"]]), "motion": flow["motion"], "jerk": flow["jerk"], "freeze": flow["freeze"],
    }
    flags = {
        "colour_drift": _beyond(colour["delta_e"], thresholds.delta_e) or _beyond(colour["hist_emd"], thresholds.hist_emd),
        "sharpness_loss": _beyond(sharp["loss"], thresholds.sharpness_loss),
        "seam": bool(len(seam["score"]) and (seam["score"] > thresholds.seam).any()),
        "jerk": bool(np.nanmax(flow["jerk"]) > thresholds.jerk) if np.isfinite(flow["jerk"]).any() else False,
        "freeze": bool(np.nanmax(flow["freeze"]) > thresholds.freeze),
    }
    if scene is not None:
        fidelity = world_fidelity(frames, bins, scene)
        series.update({f"fidelity_{name}": values for name, values in fidelity.items()})
        flags["fidelity"] = bool(np.nanmin(fidelity["recall"]) < thresholds.recall)
    seam_ratio, seam_block_ratio = (
        (float(np.mean(seam["score"])), float(np.mean(seam["block_score"]))) if len(seam["score"]) else (np.nan, np.nan)
    )
    return VideoQuality(
        series={name: [float(v) for v in values] for name, values in series.items()},
        flags=flags, seconds=bins.centres_seconds(),
        seam_ratio=seam_ratio, seam_block_ratio=seam_block_ratio,
        extras={"join_diff": seam["join_diff"].tolist(), "within_median": seam["within_median"].tolist(),
                "block_median": seam["block_median"].tolist(),
                "mean_lab": colour["mean_lab"].tolist()},
    )
