"""Aggregating the quality benchmark: per-generator means over prompts, the 12-segment summary, the goal ratios,
Markdown tables in the shape of the paper's Tables 1 and 3, and matplotlib plots of each metric against time."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._deps import require

GOALS = {"color_drift_ratio": 0.5, "sharpness_loss_ratio": 0.5, "seam_ratio": 1.5}  # the targets (≤)
PLOTTED = (  # (series, title, y label)
    ("delta_e", "colour drift vs segment 1", "CIEDE2000 of mean Lab"),
    ("hist_emd", "colour histogram distance vs segment 1", "Lab EMD"),
    ("sharpness_rel", "sharpness relative to segment 1", "Laplacian var. ratio"),
    ("seam", "seam score at the join", "join diff / within-segment median"),
    ("seam_block", "seam vs latent boundaries", "join diff / block-boundary median"),
    ("jerk", "optical-flow jerk (lower = smoother)", "|ΔF| / |F|"),
    ("motion", "motion (mean flow speed)", "px / frame"),
    ("fidelity_recall", "prompted objects found", "share of colours"),
)
TABLE1 = ("ar", "mmpl", "world")
TABLE3 = ("mmpl", "mmpl_no_early", "mmpl_no_mid", "mmpl_naive", "mmpl_anchor", "ar", "ar_anchor")


def _mean(values) -> float:
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def summarise(videos: list[dict]) -> dict:
    """Per-bin means over prompts, and the summary at the last segment, of `VideoQuality.to_json()` dicts."""
    names = videos[0]["series"].keys()
    per_bin = {n: [_mean(col) for col in zip(*(v["series"][n] for v in videos))] for n in names}
    last = {n: [v["series"][n][-1] for v in videos] for n in names}
    summary = {
        "delta_e_last": _mean(last["delta_e"]),
        "delta_e_avg": _mean(per_bin["delta_e"][1:]),
        "hist_emd_last": _mean(last["hist_emd"]),
        "sharpness_rel_last": _mean(last["sharpness_rel"]),
        # a loss per video: a sharper (or noisier) last segment counts as no loss, not as a negative one
        "sharpness_loss_last": _mean([max(0.0, v) for v in last["sharpness_loss"] if v is not None]),
        "seam_ratio": _mean([v["seam_ratio"] for v in videos]),
        "seam_block_ratio": _mean([v["seam_block_ratio"] for v in videos]),
        "jerk": _mean(per_bin["jerk"]),
        "motion_first": per_bin["motion"][0], "motion_last": _mean(last["motion"]),
        "freeze": _mean(per_bin["freeze"]),
    }
    if "fidelity_recall" in per_bin:
        summary.update(recall_first=per_bin["fidelity_recall"][0], recall_last=_mean(last["fidelity_recall"]),
                       exact_first=per_bin["fidelity_exact"][0], exact_last=_mean(last["fidelity_exact"]),
                       spurious_first=per_bin["fidelity_spurious"][0], spurious_last=_mean(last["fidelity_spurious"]))
    flags = {k: _mean([float(v["flags"][k]) for v in videos]) for k in videos[0]["flags"]}
    return {"per_bin": per_bin, "summary": summary, "flag_rate": flags}


def goal(generators: dict) -> dict:
    """The issue's goal ratios at the last segment: MMPL over AR for colour drift and sharpness loss, MMPL's seam
    score. A ratio is None where a generator is missing or the AR value is 0."""
    def ratio(key):
        if "mmpl" not in generators or "ar" not in generators:
            return None
        a, b = generators["mmpl"]["summary"][key], generators["ar"]["summary"][key]
        return None if not np.isfinite(a) or not np.isfinite(b) or b <= 0 else a / b

    values = {
        "color_drift_ratio": ratio("delta_e_last"),
        "sharpness_loss_ratio": ratio("sharpness_loss_last"),
        "seam_ratio": generators["mmpl"]["summary"]["seam_ratio"] if "mmpl" in generators else None,
    }
    met = {k: (v is not None and np.isfinite(v) and v <= GOALS[k]) for k, v in values.items()}
    return {**{k: (None if v is None else round(float(v), 4)) for k, v in values.items()}, "met": met}


def _fmt(value, digits=2, percent=False) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{100 * value:.0f} %" if percent else f"{value:.{digits}f}"


def markdown_tables(result: dict) -> str:
    """Two Markdown tables (MMPL against AR; ablations) from a benchmark result dict."""
    segments = result["config"]["segments"]
    head = (f"| method | ΔE₀₀ vs S1 @S{segments} ↓ | Lab EMD @S{segments} ↓ | sharpness @S{segments} (S1 = 1) | "
            f"sharpness loss ↓ | seam ↓ | seam vs latent bound. ↓ | flow jerk ↓ | freeze ↓ | "
            f"colours found S1 → S{segments} ↑ | exact objects S1 → S{segments} ↑ | extra objects S{segments} ↓ |")
    rule = "|" + "---|" * (head.count("|") - 1)

    def row(name):
        g = result["generators"][name]
        s = g["summary"]
        recall = f"{_fmt(s.get('recall_first'), percent=True)} → {_fmt(s.get('recall_last'), percent=True)}"
        exact = f"{_fmt(s.get('exact_first'), percent=True)} → {_fmt(s.get('exact_last'), percent=True)}"
        return (f"| {g['label']} | {_fmt(s['delta_e_last'])} | {_fmt(s['hist_emd_last'])} | "
                f"{_fmt(s['sharpness_rel_last'])} | {_fmt(s['sharpness_loss_last'])} | {_fmt(s['seam_ratio'])} | "
                f"{_fmt(s['seam_block_ratio'])} | {_fmt(s['jerk'])} | {_fmt(s['freeze'], percent=True)} | {recall} | "
                f"{exact} | {_fmt(s.get('spurious_last'), 1)} |")

    present = result["generators"]
    parts = []
    for title, names in (("MMPL against the autoregressive baseline (shape of the paper's Table 1)", TABLE1),
                         ("Ablations (shape of the paper's Table 3; inference-time only)", TABLE3)):
        rows = [row(n) for n in names if n in present]
        if rows:
            parts.append(f"**{title}**\n\n{head}\n{rule}\n" + "\n".join(rows))
    return "\n\n".join(parts) + "\n"


def _style(name: str) -> dict:
    if name == "world":
        return {"color": "0.5", "linestyle": "--"}
    if name.startswith("ar"):
        return {"color": "tab:red" if name == "ar" else "tab:orange"}
    palette = {"mmpl": "tab:blue", "mmpl_no_early": "tab:green", "mmpl_no_mid": "tab:olive",
               "mmpl_naive": "tab:purple", "mmpl_anchor": "tab:cyan"}
    return {"color": palette.get(name, "k")}


def plot_metrics(result: dict, names, path: Path, title: str, bands: bool = True) -> Path | None:
    """A grid of panels, one per metric against time (bin centres), a line per generator (mean over prompts) and,
    with `bands`, its range over prompts shaded. Returns None when none of `names` were run."""
    names = [n for n in names if n in result["generators"]]
    if not names:
        return None
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot")
    panels = [p for p in PLOTTED if p[0] in result["generators"][names[0]]["per_bin"]]
    cols = 4
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.2 * ((len(panels) + cols - 1) // cols)),
                             squeeze=False)
    for ax, (series, panel_title, ylabel) in zip(axes.flat, panels):
        for name in names:
            g = result["generators"][name]
            x = g["per_prompt"][0]["seconds"]
            ax.plot(x, g["per_bin"][series], marker=".", label=g["label"], **_style(name))
            if bands:
                runs = np.array([[np.nan if v is None else v for v in p["series"][series]] for p in g["per_prompt"]])
                if np.isfinite(runs).any(axis=0).all():
                    ax.fill_between(x, np.nanmin(runs, 0), np.nanmax(runs, 0), alpha=0.12, color=_style(name)["color"])
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(names), 4), fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_frames(rows: dict[str, np.ndarray], stops: list[int], path: Path, title: str) -> Path:
    """A strip per generator: the last frame of each segment (`stops` = each bin's end), labelled by time."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot")
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(4.0, 0.9 * len(stops) + 0.3), 1.25 * len(rows) + 0.5),
                             squeeze=False)
    for ax, (label, frames) in zip(axes[:, 0], rows.items()):
        ax.imshow(np.concatenate([frames[s - 1] for s in stops], axis=1), interpolation="nearest")
        ax.set_yticks([])
        ax.set_title(label, loc="left", fontsize=9)
        size = frames.shape[2]
        ax.set_xticks([size * (i + 0.5) for i in range(len(stops))], [f"S{i + 1}" for i in range(len(stops))], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
