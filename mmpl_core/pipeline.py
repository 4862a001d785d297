"""One segment end to end: text → micro plan → content populating → VAE decode (the standalone path)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .layout import SegmentLayout
from .segment import GroupTiming, Prompt, SegmentLatents, SegmentSampler, plan_segment, populate_segment
from .text import WAN_NEGATIVE_PROMPT, HashedTextEncoder
from .vae import WanVAE


@dataclass
class SegmentVideo:
    """video: [3, T, H, W] in [-1, 1]; latents: the segment's [C, N, h, w] latents (all frames known)."""

    video: torch.Tensor
    latents: SegmentLatents
    timings: list[GroupTiming] = field(default_factory=list)
    decode_seconds: float = 0.0


@dataclass
class MMPLPipeline:
    """A DiT sampler, a VAE, a text encoder and a segment layout."""

    sampler: SegmentSampler
    vae: WanVAE
    layout: SegmentLayout
    text_encoder: HashedTextEncoder
    negative_prompt: str = WAN_NEGATIVE_PROMPT

    def encode_prompt(self, prompt: str) -> Prompt:
        negative = self.text_encoder.encode(self.negative_prompt) if self.sampler.guided else None
        return Prompt(self.text_encoder.encode(prompt), negative)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        if height % 16 or width % 16:
            raise ValueError(f"height and width must be multiples of 16 (VAE ×8, patch ×2), got {height}×{width}")
        return (16, height // 8, width // 8)

    def generate_segment(
        self, prompt: str, *, seed: int, height: int, width: int, segment: int = 0, on_step=None
    ) -> SegmentVideo:
        """Plan then populate one segment and decode it to pixels."""
        import time

        text = self.encode_prompt(prompt)
        planned = plan_segment(
            self.sampler, self.layout, text, self.latent_shape(height, width), seed=seed, segment=segment,
            on_step=on_step,
        )
        populated = populate_segment(
            self.sampler, self.layout, text, planned.result, seed=seed, segment=segment, on_step=on_step
        )
        start = time.perf_counter()
        with torch.no_grad():
            video = self.vae.decode(populated.result.latents[None].to(self.vae.device, self.vae.dtype))[0].float().cpu()
        return SegmentVideo(video, populated.result, planned.timings + populated.timings, time.perf_counter() - start)
