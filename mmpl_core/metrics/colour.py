"""Colour drift against the first bin (CIELAB) and sharpness relative to it (variance of the Laplacian)."""
from __future__ import annotations

import numpy as np

from ._deps import require
from .bins import TimeBins, check_frames

QUANTILES = np.linspace(0.005, 0.995, 100)  # quantile grid for the 1-D Wasserstein distance of each Lab channel


def to_lab(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB [T, H, W, 3] → float32 CIELAB [T, H, W, 3] (L in 0..100, a/b about −128..127, D65)."""
    cv2 = require("cv2")
    t, h, w, _ = frames.shape
    flat = frames.reshape(t * h, w, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(t, h, w, 3)


def _channel_quantiles(lab: np.ndarray) -> np.ndarray:
    """Lab pixels [..., 3] → quantiles [3, Q] of each channel."""
    pixels = lab.reshape(-1, 3)
    return np.quantile(pixels, QUANTILES, axis=0).T


def colour_drift(frames: np.ndarray, bins: TimeBins) -> dict[str, np.ndarray]:
    """Per bin, against bin 1:

    delta_e: CIEDE2000 distance between the bins' mean Lab colours (≈ 2.3 is a just-noticeable difference).
    hist_emd: mean over L, a, b of the 1-D earth mover's (Wasserstein-1) distance between the bins' pixel value
        distributions, in Lab units: catches shifts that keep the mean (saturation, contrast) too.
    mean_lab: [bins, 3] the mean Lab colour of each bin.
    """
    check_frames(frames, bins)
    skimage_color = require("skimage.color")
    lab = to_lab(frames)
    means = np.stack([lab[a:b].reshape(-1, 3).mean(0) for a, b in bins.bounds])  # [bins, 3]
    delta_e = skimage_color.deltaE_ciede2000(np.broadcast_to(means[:1], means.shape), means)
    quantiles = [_channel_quantiles(lab[a:b]) for a, b in bins.bounds]  # [bins] × [3, Q]
    hist_emd = np.array([np.abs(q - quantiles[0]).mean() for q in quantiles])
    return {"delta_e": np.asarray(delta_e, np.float64), "hist_emd": hist_emd, "mean_lab": means}


def join_colour_steps(frames: np.ndarray, bins: TimeBins, window: int = 4) -> np.ndarray:
    """At each join of `bins`: the CIEDE2000 distance between the mean Lab colours of the `window` frames before it
    and the `window` frames after it (the colour step a viewer sees at the join) → [joins]."""
    check_frames(frames, bins)
    skimage_color = require("skimage.color")
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    steps = []
    for j in bins.joins:
        lab = to_lab(frames[max(j - window, 0):j + window])
        split = min(window, j)
        before, after = lab[:split].reshape(-1, 3).mean(0), lab[split:].reshape(-1, 3).mean(0)
        steps.append(float(skimage_color.deltaE_ciede2000(before, after)))
    return np.asarray(steps, dtype=np.float64)


def frame_sharpness(frames: np.ndarray) -> np.ndarray:
    """Per frame [T]: variance of the Laplacian of the grey frame divided by its mean grey level squared.

    Dividing by the squared mean makes a global brightness change (the synthetic world's ±20 % light, or a
    darkening drift) count as colour, not as sharpness; what is left responds to blur (down) and noise (up).
    """
    cv2 = require("cv2")
    values = np.empty(len(frames))
    for i, frame in enumerate(frames):
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
        values[i] = lap.var() / max(float(grey.mean()), 1.0) ** 2
    return values


def sharpness(frames: np.ndarray, bins: TimeBins) -> dict[str, np.ndarray]:
    """Per bin: `sharpness` (mean of `frame_sharpness`), `relative` (over bin 1's) and `loss` = 1 − relative
    (> 0: blurrier than segment 1, < 0: sharper or noisier)."""
    check_frames(frames, bins)
    per_bin = bins.reduce(frame_sharpness(frames))
    relative = per_bin / max(per_bin[0], 1e-12)
    return {"sharpness": per_bin, "relative": relative, "loss": 1.0 - relative}
