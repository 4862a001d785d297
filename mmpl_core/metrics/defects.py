"""Synthetic defects injected into clean videos: each metric must flag its own (tests, calibration).

All take and return uint8 RGB frames [T, H, W, 3]; `start` is the first frame the defect touches, and ramps grow
linearly from nothing at `start` to full strength at the last frame.
"""
from __future__ import annotations

import numpy as np

from ._deps import require
from .bins import check_frames

WARM_TINT = np.array([1.0, 0.35, -1.0])  # RGB direction of the colour ramp: warmer, less blue (a typical drift)


def _ramp(frames: np.ndarray, start: int) -> np.ndarray:
    """0 before `start`, then linearly up to 1 at the last frame → [T]."""
    t = np.arange(len(frames), dtype=np.float64)
    return np.clip((t - start) / max(len(frames) - 1 - start, 1), 0.0, 1.0)


def colour_ramp(frames: np.ndarray, start: int = 0, shift: float = 40.0, gain: float = 0.25) -> np.ndarray:
    """Colours drift warm and brighter: + shift·u along WARM_TINT (grey levels) and ×(1 + gain·u), u the ramp."""
    check_frames(frames)
    u = _ramp(frames, start)[:, None, None, None]
    out = frames.astype(np.float64) * (1 + gain * u) + shift * u * WARM_TINT
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def blur_ramp(frames: np.ndarray, start: int = 0, max_sigma: float = 1.5) -> np.ndarray:
    """Gaussian blur growing from none to `max_sigma` px."""
    cv2 = require("cv2")
    check_frames(frames)
    out = frames.copy()
    for t, u in enumerate(_ramp(frames, start)):
        if u > 0:
            out[t] = cv2.GaussianBlur(frames[t], (0, 0), sigmaX=max_sigma * u, borderType=cv2.BORDER_REFLECT)
    return out


def hard_cut(frames: np.ndarray, other: np.ndarray, at: int) -> np.ndarray:
    """frames[:at] followed by other[at:] (the same length and size)."""
    check_frames(frames)
    check_frames(other, name="other")
    if other.shape != frames.shape or not 0 < at < len(frames):
        raise ValueError(f"hard_cut needs equal shapes and 0 < at < {len(frames)}, got {other.shape}, at={at}")
    return np.concatenate([frames[:at], other[at:]])


def freeze(frames: np.ndarray, start: int, length: int) -> np.ndarray:
    """Frame `start` repeated over the next `length` frames (motion stops, then jumps on)."""
    check_frames(frames)
    if not 0 <= start < len(frames) or length < 1:
        raise ValueError(f"freeze needs 0 <= start < {len(frames)} and length >= 1, got {start}, {length}")
    out = frames.copy()
    out[start : start + length] = frames[start]
    return out


def jitter(frames: np.ndarray, start: int = 0, amplitude: float = 2.0, seed: int = 0) -> np.ndarray:
    """Random sub-pixel camera shake of up to ±amplitude px per axis from `start` on (edges replicated)."""
    cv2 = require("cv2")
    check_frames(frames)
    rng = np.random.default_rng(seed)
    out = frames.copy()
    h, w = frames.shape[1:3]
    for t in range(start, len(frames)):
        dx, dy = rng.uniform(-amplitude, amplitude, size=2)
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        out[t] = cv2.warpAffine(frames[t], shift, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out
