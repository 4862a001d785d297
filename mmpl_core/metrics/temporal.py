"""Temporal metrics: seams at segment joins, optical-flow smoothness and motion freezes (Farneback flow)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._deps import require
from .bins import TimeBins, check_frames

MIN_DIFF = 0.25  # grey levels: floor of a within-segment frame difference (a frozen stretch would divide by ~0)


@dataclass(frozen=True)
class FlowParams:
    """cv2.calcOpticalFlowFarneback parameters, sized for small (64–512 px) frames."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 9
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.1


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """Mean absolute RGB difference (0..255) between consecutive frames → [T − 1]; entry t is frames t → t+1."""
    check_frames(frames)
    f = frames.astype(np.int16)
    return np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))


def seams(frames: np.ndarray, bins: TimeBins) -> dict[str, np.ndarray]:
    """Seam score at each join: the frame difference across the join over the median frame difference inside the
    two segments it connects (1 = a join is as smooth as ordinary motion; a hard cut gives ≫ 1).

    A latent video decoder draws each latent frame as a block of `bins.block` frames, so differences *between*
    blocks are larger than within them, and every join is such a block boundary. When the bins know their block
    size, `block_score` compares the join with the median difference at the block boundaries inside the same two
    segments instead (like for like: 1 = the join is no worse than any other latent boundary).

    Returns join_diff [J], within_median [J] (floored at MIN_DIFF), score [J], block_median [J] and block_score [J]
    (NaN without block size), and per_bin [bins] (NaN for bin 1, then the score of the join that starts each bin).
    """
    check_frames(frames, bins)
    diffs = frame_differences(frames)  # pair t = frames (t, t+1)
    crossing = {j - 1 for j in bins.joins}  # pair index that crosses join j
    boundary = {b - 1 for b in bins.block_starts()}  # pair index that crosses into a new block
    out = {name: [] for name in ("join_diff", "within_median", "score", "block_median", "block_score")}
    for k, j in enumerate(bins.joins):
        pairs = [t for t in range(bins.bounds[k][0], bins.bounds[k + 1][1] - 1) if t not in crossing]
        median = max(float(np.median(diffs[pairs])), MIN_DIFF)
        at_blocks = [t for t in pairs if t in boundary]
        block_median = max(float(np.median(diffs[at_blocks])), MIN_DIFF) if at_blocks else float("nan")
        out["join_diff"].append(float(diffs[j - 1]))
        out["within_median"].append(median)
        out["score"].append(out["join_diff"][-1] / median)
        out["block_median"].append(block_median)
        out["block_score"].append(out["join_diff"][-1] / block_median)
    result = {name: np.array(values, dtype=np.float64) for name, values in out.items()}
    result["per_bin"] = np.concatenate([[np.nan], result["score"]])
    return result


def optical_flow(frames: np.ndarray, params: FlowParams = FlowParams()) -> np.ndarray:
    """Farneback flow between consecutive grey frames → float32 [T − 1, H, W, 2] (px per frame)."""
    cv2 = require("cv2")
    check_frames(frames)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([
        cv2.calcOpticalFlowFarneback(a, b, None, params.pyr_scale, params.levels, params.winsize, params.iterations,
                                     params.poly_n, params.poly_sigma, 0)
        for a, b in zip(grey[:-1], grey[1:])
    ])


def flow_metrics(frames: np.ndarray, bins: TimeBins, *, freeze_speed: float = 0.1,
                 params: FlowParams = FlowParams()) -> dict[str, np.ndarray]:
    """Per bin, from Farneback flow (each frame pair counted in the bin of its second frame):

    motion: mean flow speed (px/frame).
    jerk: mean |F_t − F_{t−1}| over mean (|F_t| + |F_{t−1}|)/2 — 0 for steady motion, ~1.4 for random shakes;
        scale-free, so fast and slow videos compare (lower is smoother).
    freeze: share of frame pairs in which nothing moves: the 99th percentile of the flow speed is below
        `freeze_speed` px/frame (the synthetic world's objects never stop, so a freeze is a generation defect).
    """
    check_frames(frames, bins)
    flow = optical_flow(frames, params)  # [T-1, H, W, 2]
    speed = np.linalg.norm(flow, axis=-1)  # [T-1, H, W]
    n = len(frames)
    motion = np.full(n, np.nan)
    motion[1:] = speed.mean(axis=(1, 2))
    frozen = np.full(n, np.nan)
    frozen[1:] = (np.percentile(speed.reshape(len(speed), -1), 99, axis=1) < freeze_speed).astype(float)
    jerk = np.full(n, np.nan)
    change = np.linalg.norm(flow[1:] - flow[:-1], axis=-1).mean(axis=(1, 2))
    scale = (speed[1:].mean(axis=(1, 2)) + speed[:-1].mean(axis=(1, 2))) / 2
    jerk[2:] = change / np.maximum(scale, 1e-3)
    return {"motion": bins.reduce(motion), "jerk": bins.reduce(jerk), "freeze": bins.reduce(frozen)}
