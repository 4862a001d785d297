"""Weight-free long-horizon video quality metrics (numpy, OpenCV, scikit-image), and the long-video quality benchmark.

Every metric works on uint8 frames [T, H, W, 3] (RGB, as `video_io.to_uint8_frames` gives them) cut into time bins
(`TimeBins`, one per segment of a stitched long video) and reports one value per bin, so drift shows as a curve
against time. OpenCV, scikit-image and matplotlib are optional dependencies (`pip install mmpl-long-video[metrics]`);
they are imported only when a metric runs, so `mmpl_core` imports without them.

    colour      colour drift against the first bin (mean ΔE and histogram distance in CIELAB), sharpness
    temporal    seam score at segment joins, optical-flow smoothness (Farneback) and motion freezes
    fidelity    the synthetic world's rules kept: object count and colours (colour segmentation)
    defects     synthetic defects (colour ramp, blur ramp, hard cut, freeze, jitter) that each metric must flag
    evaluate    all metrics of one video, with the flag thresholds as data
    protocol    the benchmark's prompts and generators (MMPL, ablations, AR baseline, rendered world), cached videos
    report      means over prompts, the goal ratios, Markdown tables and plots
    benchmark   `run_quality`: the whole benchmark (front ends: `mmpl bench quality`, bench/quality.py)
"""
from .bins import TimeBins

__all__ = ["TimeBins"]
