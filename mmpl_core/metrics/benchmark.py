"""Run the long-horizon quality benchmark: generate (or load) every generator's videos, score them, write the JSON,
the plots and the Markdown tables. `mmpl bench quality` and `bench/quality.py` are front ends over `run_quality`."""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

from .bins import TimeBins
from .evaluate import Thresholds, evaluate_video
from .protocol import GENERATORS, WORLD, BenchConfig, VideoSource, run_videos
from .report import goal, markdown_tables, plot_frames, plot_metrics, summarise

PLOT_FILES = {"vs_ar": "quality_mmpl_vs_ar.png", "ablations": "quality_ablations.png", "frames": "quality_frames.png"}


def run_quality(config: BenchConfig, *, out: Path | None = None, plots_dir: Path | None = None,
                cache_dir: Path | None = None, tables: Path | None = None, thresholds: Thresholds = Thresholds(),
                progress: bool = True) -> dict:
    """The whole benchmark → its result dict (also written to `out` as JSON when given).

    plots_dir: where the PNGs go (None: no plots). cache_dir: generated videos (None: no cache).
    tables: where to write the Markdown tables (None: not written; they are in the result under "tables").
    """
    start = time.perf_counter()
    source = VideoSource(config, cache_dir)
    generators = [GENERATORS[name] for name in config.generators]
    scenes = config.scenes()
    bins = TimeBins.segments(source.layout(generators[0]), config.segments, fps=16)
    scored: dict[str, list[dict]] = {g.name: [] for g in generators}
    strips: dict[str, object] = {}
    timing = {"videos": 0.0, "metrics": 0.0}

    def consume(generator, index, frames):
        tick = time.perf_counter()
        quality = evaluate_video(frames, bins, scenes[index], thresholds)
        timing["metrics"] += time.perf_counter() - tick
        scored[generator.name].append(quality.to_json())
        if index == 0 and generator.name in ("world", "mmpl", "ar"):
            strips[generator.label] = frames

    tick = time.perf_counter()
    run_videos(source, generators, consume, progress=progress)
    timing["videos"] = time.perf_counter() - tick - timing["metrics"]
    from ..data.synthetic import scene_prompt

    result = {
        "benchmark": "long-horizon quality (issue 8)",
        "config": {**asdict(config), "steps": config.steps or source.bundle().steps,
                   "frames": bins.num_frames, "fps": bins.fps, "bins": [list(b) for b in bins.bounds]},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": _torch_threads()},
        "thresholds": asdict(thresholds),
        "prompts": [scene_prompt(s) for s in scenes],
        "generators": {},
    }
    for g in generators:
        result["generators"][g.name] = {"label": g.label, "spec": asdict(g), **summarise(scored[g.name]),
                                        "per_prompt": scored[g.name]}
    result["goal"] = goal(result["generators"])
    result["tables"] = markdown_tables(result)
    if plots_dir is not None:
        plots_dir = Path(plots_dir)
        segments = config.segments
        plot_metrics(result, ("mmpl", "ar", WORLD), plots_dir / PLOT_FILES["vs_ar"],
                     f"MMPL vs autoregressive baseline, {config.prompts} prompts × {segments} segments (mean, range)")
        plot_metrics(result, ("mmpl", "mmpl_no_early", "mmpl_no_mid", "mmpl_naive", "mmpl_anchor", "ar", "ar_anchor"),
                     plots_dir / PLOT_FILES["ablations"], "MMPL ablations (inference-time) and the AR baseline",
                     bands=False)
        if strips:
            plot_frames(strips, [b for _, b in bins.bounds], plots_dir / PLOT_FILES["frames"],
                        f"last frame of each segment, prompt 1: {result['prompts'][0]}")
    timing["total"] = time.perf_counter() - start
    result["seconds"] = {k: round(v, 1) for k, v in timing.items()}
    result["seconds"]["cached_videos"] = source.cache_hits
    if len(source.generation_seconds) == len(generators) * config.prompts:  # known for every video
        result["seconds"]["generating_all_videos"] = round(sum(source.generation_seconds.values()), 1)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    if tables is not None:
        Path(tables).parent.mkdir(parents=True, exist_ok=True)
        Path(tables).write_text(result["tables"])
    return result


def final_line(result: dict) -> str:
    """The benchmark's last line: the goal ratios (and whether each is met) as one JSON object."""
    g = result["goal"]
    return json.dumps({"color_drift_ratio": g["color_drift_ratio"], "sharpness_loss_ratio": g["sharpness_loss_ratio"],
                       "seam_ratio": g["seam_ratio"], "goal_met": g["met"],
                       "segments": result["config"]["segments"], "prompts": result["config"]["prompts"],
                       "seconds": result["seconds"]["total"]})


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
