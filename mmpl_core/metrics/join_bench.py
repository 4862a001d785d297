"""The join benchmark (issue 19): loop seams, the joins of the main command's video, join correction and the two forms
of the Appendix F noise init, on the quality benchmark's protocol (prompts, seeds, models, cached videos) and with its
metrics (`evaluate_video`: seam score and colour drift) plus the join report's colour step (`joins.join_report`).
Front ends: `mmpl bench joins` and bench/joins.py.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np

from .bins import TimeBins
from .evaluate import evaluate_video
from .protocol import GENERATORS, BenchConfig, VideoSource

# The variants compared with plain MMPL (today's defaults: no join correction, no noise init).
VARIANTS = ("mmpl", "mmpl_fix_joins", "mmpl_init_official", "mmpl_init_paper", "mmpl_init_paper_full")
# scripts/demo.sh's prompt when that script is not at hand (an installed package): the main command's video.
MAIN_PROMPT = "two objects: a red circle and a yellow square bounce over a navy to black gradient"
COLUMNS = (("seam", "seam ↓"), ("seam_block", "seam vs latent bound. ↓"), ("colour_step", "join ΔE₀₀ step ↓"),
           ("colour_step_max", "largest join step ↓"), ("delta_e_last", "ΔE₀₀ vs S1 @last ↓"),
           ("delta_e_avg", "ΔE₀₀ vs S1, mean ↓"), ("flagged", "joins flagged"))


def _video_scores(frames: np.ndarray, layout, segments: int, loop: bool = False) -> tuple[dict, list]:
    from ..joins import join_report

    joins = join_report(frames, layout, segments, loop=loop)
    ordinary = joins[:-1] if loop else joins
    row = {"colour_step": float(np.mean([j.colour_step for j in ordinary])),
           "colour_step_max": float(np.max([j.colour_step for j in ordinary])),
           "flagged": int(sum(j.flagged for j in joins))}
    if not loop:
        quality = evaluate_video(frames, TimeBins.segments(layout, segments))
        delta_e = np.asarray(quality.series["delta_e"], dtype=np.float64)
        row.update(seam=quality.seam_ratio, seam_block=quality.seam_block_ratio, delta_e_last=float(delta_e[-1]),
                   delta_e_avg=float(np.nanmean(delta_e[1:])))
    else:
        row.update(seam=float(np.mean([j.seam for j in ordinary])),
                   seam_block=float(np.mean([j.seam_block for j in ordinary])))
    return row, joins


def _mean_rows(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main_command_prompt() -> str:
    """The prompt of the main command, `bash scripts/demo.sh` (read from the script in a checkout)."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "demo.sh"
    match = re.search(r'generate --prompt "([^"]+)"', script.read_text()) if script.is_file() else None
    return match[1] if match else MAIN_PROMPT


def main_video(source: VideoSource, segments: int, cache_dir: Path | None) -> np.ndarray:
    """The main command's video (`bash scripts/demo.sh`: its prompt, seed 0), cached like the benchmark's."""
    from ..video_io import to_uint8_frames

    generator, prompt = GENERATORS["mmpl"], main_command_prompt()
    pipe, settings = source.pipeline(generator), source.settings(generator, 0)
    key = hashlib.sha256(f"{prompt}|{segments}|{settings!r}|{pipe.fingerprint}".encode()).hexdigest()[:16]
    path = None if cache_dir is None else Path(cache_dir) / "main" / f"demo-{key}.npz"
    if path is not None and path.exists():
        return np.load(path)["frames"]
    plan = pipe.populate(pipe.plan(pipe.new_plan([prompt], segments, settings)))
    frames = np.concatenate([to_uint8_frames(part) for part in pipe.decode_stream(plan)])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, frames=frames)
    return frames


def run_joins(config: BenchConfig, *, cache_dir: Path | None = None, out: Path | None = None,
              progress: bool = True) -> dict:
    """The whole join benchmark → its result dict (also written to `out` as JSON)."""
    from tqdm import tqdm

    start = time.perf_counter()
    source = VideoSource(config, cache_dir)
    layout = source.layout(GENERATORS["mmpl"])
    jobs = [(name, i) for name in (*VARIANTS, "mmpl_loop") for i in range(config.prompts)]
    rows: dict[str, list[dict]] = {name: [] for name in (*VARIANTS, "mmpl_loop")}
    loops = []
    with tqdm(total=len(jobs) + 1, desc="join videos", unit="video", disable=not progress) as bar:
        for name, i in jobs:
            bar.set_postfix_str(f"{name} prompt {i}")
            generator = GENERATORS[name]
            row, joins = _video_scores(source.video(generator, i), layout, config.segments, loop=generator.loop)
            rows[name].append(row)
            if generator.loop:
                wrap = joins[-1]
                loops.append({"prompt": i, "seam": wrap.seam, "seam_block": wrap.seam_block,
                              "colour_step": wrap.colour_step, "other_joins_seam": row["seam"],
                              "other_joins_seam_block": row["seam_block"],
                              "other_joins_colour_step": row["colour_step"]})
            bar.update(1)
        bar.set_postfix_str("main command's video")
        main_row, main_joins = _video_scores(main_video(source, config.segments, cache_dir), layout, config.segments)
        bar.update(1)
    b = source.bundle()
    result = {
        "benchmark": "joins, loops and noise init (issue 19)",
        "config": {"prompts": config.prompts, "segments": config.segments, "steps": config.steps or b.steps,
                   "scene_seed": config.scene_seed, "models": {"dit": b.dit.name, "fingerprint":
                                                                source.pipeline(GENERATORS["mmpl"]).fingerprint}},
        "variants": {name: {"label": GENERATORS[name].label, "mean": _mean_rows(rows[name]), "per_prompt": rows[name]}
                     for name in VARIANTS},
        "loop": {"per_prompt": loops,
                 "mean": _mean_rows([{k: v for k, v in r.items() if k != "prompt"} for r in loops])},
        "main": {"prompt": main_command_prompt(), "summary": main_row,
                 "joins": [{"join": j.name, "frame": j.frame, "seam": j.seam, "seam_block": j.seam_block,
                            "colour_step": j.colour_step, "flagged": j.flagged} for j in main_joins]},
    }
    result["tables"] = markdown(result)
    result["seconds"] = round(time.perf_counter() - start, 1)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return result


def markdown(result: dict) -> str:
    fmt = lambda v: f"{v:.2f}"  # noqa: E731
    cfg = result["config"]
    lines = [f"**Variants** ({cfg['prompts']} prompts × {cfg['segments']} segments, mean over prompts)", "",
             "| variant | " + " | ".join(title for _, title in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, entry in result["variants"].items():
        lines.append(f"| {entry['label']} | " + " | ".join(fmt(entry["mean"][k]) for k, _ in COLUMNS) + " |")
    loop = result["loop"]
    lines += ["", f"**Planned loop** ({cfg['segments']} segments): the join from the last frame back to the first", "",
              "| prompt | loop seam | loop seam vs latent bound. | loop ΔE₀₀ step | other joins' seam | "
              "other joins vs latent bound. | other joins' ΔE₀₀ step |", "|---|---|---|---|---|---|---|"]
    keys = ("seam", "seam_block", "colour_step", "other_joins_seam", "other_joins_seam_block",
            "other_joins_colour_step")
    for row in loop["per_prompt"] + [{"prompt": "mean", **loop["mean"]}]:
        lines.append(f"| {row['prompt']} | " + " | ".join(fmt(row[k]) for k in keys) + " |")
    main = result["main"]
    lines += ["", f"**The main command's video** (`bash scripts/demo.sh`: \"{main['prompt']}\", {cfg['segments']} "
              "segments, seed 0)", "", "| join | frame | seam | seam vs latent bound. | ΔE₀₀ step | flagged |",
              "|---|---|---|---|---|---|"]
    for j in main["joins"]:
        lines.append(f"| {j['join']} | {j['frame']} | {fmt(j['seam'])} | {fmt(j['seam_block'])} | "
                     f"{fmt(j['colour_step'])} | {'yes' if j['flagged'] else ''} |")
    s = main["summary"]
    lines.append(f"| mean | | {fmt(s['seam'])} | {fmt(s['seam_block'])} | {fmt(s['colour_step'])} | {s['flagged']} |")
    return "\n".join(lines) + "\n"
