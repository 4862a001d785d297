"""Sample plans for the plan-folder tests: every segment status, unicode prompts, T2V and I2V; bitwise comparison."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from mmpl_core.layout import get_layout
from mmpl_core.plan import GenerationSettings, Plan, SegmentPlan
from mmpl_core.sampling import SamplerConfig
from mmpl_core.segment import SegmentLatents

PROMPTS = ["a cat", "ein Bär 🐻 läuft — «unicode» ✓", "c", "d\nmultiline \"quoted\" \\ prompt"]


def segment_latents(layout, frames, gen) -> SegmentLatents:
    empty = SegmentLatents.empty(16, layout.num_frames, 4, 4)
    return empty.with_frames(frames, torch.randn(16, len(frames), 4, 4, generator=gen))


def make_plan(i2v: bool = False, seed: int = 0, kv_dtype: str = "compute") -> Plan:
    """Four segments: populated (all frames), planned (keyframes, locked), partial (initial frames only), empty."""
    gen = torch.Generator().manual_seed(seed)
    layout = get_layout("mmpl-i2v-9" if i2v else "mmpl-t2v-9")
    settings = GenerationSettings(seed=7, height=32, width=32, sampler=SamplerConfig("euler", 4, 3.0, 1.5),
                                  bridge="naive", color_anchor=0.5, boundary_weight=0.25, fps=24, kv_dtype=kv_dtype)
    image = torch.randn(16, 1, 4, 4, generator=gen) if i2v else None
    plan = Plan.new(layout, settings, PROMPTS, 4, "fp-123", "negative ✗", image)
    plan = plan.with_segment(0, SegmentPlan(PROMPTS[0], 11, segment_latents(layout, range(layout.num_frames), gen)))
    keyframes = segment_latents(layout, layout.keyframes, gen)
    plan = plan.with_segment(1, SegmentPlan(PROMPTS[1], 12, keyframes, locked=True))
    plan = plan.with_segment(2, SegmentPlan(PROMPTS[2], 13, segment_latents(layout, [0, 1], gen)))
    return plan.reroll(3, 99)


def assert_same(a: Plan, b: Plan) -> None:
    assert (a.layout, a.settings, a.model_fingerprint, a.negative_prompt) == (
        b.layout, b.settings, b.model_fingerprint, b.negative_prompt)
    assert (a.image_latent is None) == (b.image_latent is None)
    if a.image_latent is not None:
        assert torch.equal(a.image_latent.view(torch.int32), b.image_latent.view(torch.int32))
    assert len(a.segments) == len(b.segments)
    for sa, sb in zip(a.segments, b.segments):
        assert (sa.prompt, sa.seed, sa.locked) == (sb.prompt, sb.seed, sb.locked)
        assert sa.status(a.layout) == sb.status(b.layout)
        assert (sa.latents is None) == (sb.latents is None)
        if sa.latents is not None:
            assert sa.latents.known == sb.latents.known and sa.latents.latents.shape == sb.latents.latents.shape
            known = sorted(sa.latents.known)
            bits_a, bits_b = (s.latents.latents[:, known].view(torch.int32) for s in (sa, sb))
            assert torch.equal(bits_a, bits_b)  # bitwise
            unknown = [f for f in range(a.layout.num_frames) if f not in sa.latents.known]
            assert torch.isnan(sb.latents.latents[:, unknown]).all()


def folder_state(directory: Path) -> dict[str, tuple]:
    """Mode, size, mtime and inode of every entry: what a read-only load must leave as it was."""
    return {p.name: (s.st_mode, s.st_size, s.st_mtime_ns, s.st_ino) for p in directory.iterdir() for s in [os.lstat(p)]}


def folder_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
