"""The long-horizon quality protocol: a fixed, seeded prompt set of the synthetic world, the generators compared
(MMPL, its inference-time ablations, and the autoregressive baseline), and cached generation of their videos.

Every generator runs on the embedded demo models with the same sampler, steps, seeds and prompts. Videos are cached
as uint8 frames under a cache folder, keyed by everything that decides them, so re-running the report is cheap.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.synthetic import Scene, render, sample_scene, scene_prompt

WORLD = "world"  # the rendered synthetic world itself: the prompt's ground truth, no model


@dataclass(frozen=True)
class Generator:
    """One way of making a long video. model: "mmpl" / "ar" (demo bundle entries) or WORLD.

    ablation: "" (the model's own layout), "no-early" or "no-mid" (paper Table 3 layouts over the same weights:
    inference only, the paper re-trains for each). bridge / color_anchor / boundary_weight / noise_init / loop: as in
    `GenerationSettings`; fix_joins: join correction over that many frames when stitching (`stitch_stream`).
    """

    name: str
    label: str
    model: str
    ablation: str = ""
    bridge: str = "vae"
    color_anchor: float = 0.0
    boundary_weight: float = 0.0
    noise_init: str = "official"
    loop: bool = False
    fix_joins: int = 0


GENERATORS: dict[str, Generator] = {g.name: g for g in (
    Generator("mmpl", "MMPL (full)", "mmpl"),
    Generator("mmpl_no_early", "MMPL w/o early planning", "mmpl", ablation="no-early"),
    Generator("mmpl_no_mid", "MMPL w/o midpoint planning", "mmpl", ablation="no-mid"),
    Generator("mmpl_naive", "MMPL, naive latent reuse (no VAE bridge)", "mmpl", bridge="naive"),
    Generator("mmpl_anchor", "MMPL + colour anchor 1.0", "mmpl", color_anchor=1.0),
    Generator("ar", "AR baseline (sliding window)", "ar"),
    Generator("ar_anchor", "AR baseline + colour anchor 1.0", "ar", color_anchor=1.0),
    Generator(WORLD, "rendered world (reference)", WORLD),
    # the join benchmark's variants (issue 19; `mmpl bench joins`), not part of the default quality run
    Generator("mmpl_fix_joins", "MMPL + join correction (8 frames)", "mmpl", fix_joins=8),
    Generator("mmpl_init_official", "MMPL + App. F init, official form, 0.5", "mmpl", boundary_weight=0.5),
    Generator("mmpl_init_paper", "MMPL + App. F init, paper form, 0.5", "mmpl", boundary_weight=0.5,
              noise_init="paper"),
    Generator("mmpl_init_paper_full", "MMPL + App. F init, paper form, 0.9", "mmpl", boundary_weight=0.9,
              noise_init="paper"),
    Generator("mmpl_loop", "MMPL, planned loop", "mmpl", loop=True),
)}
DEFAULT_GENERATORS = ("mmpl", "mmpl_no_early", "mmpl_no_mid", "mmpl_naive", "mmpl_anchor", "ar", "ar_anchor", WORLD)


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark generates: prompts = synthetic scenes `scene_seed + i` (i < prompts), the video of prompt
    i uses generation seed i for every generator; steps None = the demo model's (20)."""

    prompts: int = 5
    segments: int = 12
    steps: int | None = None
    scene_seed: int = 100
    generators: tuple[str, ...] = DEFAULT_GENERATORS

    def __post_init__(self):
        if self.prompts < 1 or self.segments < 2:
            raise ValueError(f"need prompts >= 1 and segments >= 2, got prompts={self.prompts}, segments={self.segments}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        unknown = [g for g in self.generators if g not in GENERATORS]
        if unknown:
            raise ValueError(f"unknown generator(s) {unknown}; choose from {list(GENERATORS)}")
        if not self.generators:
            raise ValueError("choose at least one generator")

    def scenes(self) -> list[Scene]:
        return [sample_scene(self.scene_seed + i) for i in range(self.prompts)]


def ablation_layout(ablation: str, base):
    """The base MMPL layout, or its paper-Table-3 variant without early or midpoint planning."""
    from ..layout import mmpl_layout

    if not ablation:
        return base
    if ablation not in ("no-early", "no-mid"):
        raise ValueError(f"unknown ablation {ablation!r}; expected 'no-early' or 'no-mid'")
    keyword = {"no-early": "early", "no-mid": "mid"}[ablation]
    return mmpl_layout(base.num_frames, **{keyword: 0}, name=f"{base.name}-{ablation}")


class VideoSource:
    """Makes (or loads from the cache) the stitched video of one generator for one prompt → uint8 [T, H, W, 3]."""

    def __init__(self, config: BenchConfig, cache_dir: Path | None, device: str = "cpu"):
        self.config, self.cache_dir, self.device = config, cache_dir, device
        self._pipes: dict[tuple[str, str], object] = {}
        self._bundles: dict[str, object] = {}
        self.cache_hits = 0
        self.generation_seconds: dict[tuple[str, int], float] = {}  # incl. those recorded in cached videos

    def bundle(self, model: str = "mmpl"):
        from ..demo import DemoBundle

        if model not in self._bundles:
            self._bundles[model] = DemoBundle.load(model)
        return self._bundles[model]

    def layout(self, generator: Generator):
        from ..layout import get_layout

        base = get_layout(self.bundle("mmpl" if generator.model == WORLD else generator.model).layout)
        return ablation_layout(generator.ablation, base)

    def pipeline(self, generator: Generator):
        key = (generator.model, generator.ablation)
        if key not in self._pipes:
            from ..demo import load_demo_pipeline
            from ..pipeline import MMPLPipeline

            base = self._pipes.get((generator.model, ""))
            if base is None:
                base, _ = load_demo_pipeline(generator.model, device=self.device)
                self._pipes[(generator.model, "")] = base
            self._pipes[key] = MMPLPipeline(base.model, base.vae, self.layout(generator), base.text_encoder,
                                            negative_prompt=base.negative_prompt, device=self.device)
        return self._pipes[key]

    def settings(self, generator: Generator, seed: int):
        from ..plan import GenerationSettings
        from ..sampling import SamplerConfig

        b = self.bundle("mmpl" if generator.model == WORLD else generator.model)
        sampler = SamplerConfig(steps=self.config.steps or b.steps, shift=b.shift, guidance=b.guidance)
        return GenerationSettings(seed=seed, height=b.size, width=b.size, sampler=sampler,
                                  bridge=generator.bridge, color_anchor=generator.color_anchor,
                                  boundary_weight=generator.boundary_weight, noise_init=generator.noise_init,
                                  loop=generator.loop)

    def cache_key(self, generator: Generator, index: int) -> str:
        scene = self.config.scenes()[index]
        parts = {"generator": asdict(generator), "prompt": scene_prompt(scene), "scene_seed": self.config.scene_seed + index,
                 "segments": self.config.segments}
        if generator.model != WORLD:
            pipe = self.pipeline(generator)
            parts.update(settings=repr(self.settings(generator, index)), fingerprint=pipe.fingerprint,
                         layout=pipe.layout.describe())
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def video(self, generator: Generator, index: int) -> np.ndarray:
        """The stitched video of `generator` for prompt `index` (from the cache when it is there)."""
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / generator.name / f"prompt{index}-{self.cache_key(generator, index)}.npz"
            if path.exists():
                stored = np.load(path)
                self.cache_hits += 1
                if "seconds" in stored:
                    self.generation_seconds[(generator.name, index)] = float(stored["seconds"])
                return stored["frames"]
        start = time.perf_counter()
        frames = self._render(generator, index) if generator.model == WORLD else self._generate(generator, index)
        seconds = time.perf_counter() - start
        self.generation_seconds[(generator.name, index)] = seconds
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, frames=frames, seconds=np.float64(seconds))
        return frames

    def _render(self, generator: Generator, index: int) -> np.ndarray:
        from ..stitch import stitched_frame_count
        from ..video_io import to_uint8_frames

        b = self.bundle("mmpl")
        frames = stitched_frame_count(self.layout(generator), self.config.segments)
        return to_uint8_frames(render(self.config.scenes()[index], frames, b.size, b.size))

    def _generate(self, generator: Generator, index: int) -> np.ndarray:
        from ..video_io import to_uint8_frames

        pipe = self.pipeline(generator)
        plan = pipe.new_plan([scene_prompt(self.config.scenes()[index])], self.config.segments,
                             self.settings(generator, index))
        plan = pipe.populate(pipe.plan(plan))
        return np.concatenate([to_uint8_frames(part) for part in pipe.decode_stream(plan, generator.fix_joins)])


def run_videos(source: VideoSource, generators: Sequence[Generator], consume, progress: bool = True) -> None:
    """Call `consume(generator, index, frames)` for every generator × prompt, generating what is not cached."""
    from tqdm import tqdm

    jobs = [(g, i) for g in generators for i in range(source.config.prompts)]
    with tqdm(total=len(jobs), desc="quality videos", unit="video", disable=not progress) as bar:
        for generator, index in jobs:
            bar.set_postfix_str(f"{generator.name} prompt {index}")
            consume(generator, index, source.video(generator, index))
            bar.update(1)
