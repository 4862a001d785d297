"""The standalone engine in one object: a DiT, a VAE, a text encoder and a segment layout.

Front ends (the `mmpl` CLI, scripts) talk to this; ComfyUI nodes build the same pieces from ComfyUI's models.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .chain import plan_chain
from .keyframes import decode_keyframes, encode_keyframe_image
from .layout import SegmentLayout
from .plan import GenerationSettings, Plan, model_fingerprint
from .populate import decode_stream, decode_video, populate_plan
from .sampling import SamplerConfig
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


class MMPLPipeline:
    def __init__(
        self,
        model: nn.Module,
        vae: WanVAE,
        layout: SegmentLayout,
        text_encoder: HashedTextEncoder,
        *,
        negative_prompt: str = WAN_NEGATIVE_PROMPT,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        kv_cache: str = "device",
    ):
        """kv_cache: where samplers keep their KV caches, "device" or "cpu" (a runtime choice: same results)."""
        self.model = model
        self.vae = vae
        self.layout = layout
        self.text_encoder = text_encoder
        self.negative_prompt = negative_prompt
        self.device = torch.device(device)
        self.dtype = dtype
        self.kv_cache = kv_cache
        self.fingerprint = model_fingerprint(model)
        self._samplers: dict[SamplerConfig, SegmentSampler] = {}
        self.on_denoised = None  # given to every sampler: sees each denoising step's x0 estimate (live previews)
        self._prompts: dict[tuple[str, bool], Prompt] = {}

    def sampler(self, config: SamplerConfig) -> SegmentSampler:
        if config not in self._samplers:
            self._samplers[config] = SegmentSampler(self.model, config, device=self.device, dtype=self.dtype,
                                                    kv_cache=self.kv_cache)
        self._samplers[config].on_denoised = self.on_denoised
        return self._samplers[config]

    def on(self, model: nn.Module, device: torch.device | str) -> "MMPLPipeline":
        """This pipeline over another module tree with the same weights (a replica on `device`): same VAE, text
        encoder, layout and settings; its own samplers and caches, so two threads can each run one."""
        twin = MMPLPipeline(self.model, self.vae, self.layout, self.text_encoder, negative_prompt=self.negative_prompt,
                            device=device, dtype=self.dtype, kv_cache=self.kv_cache)
        twin.model, twin.on_denoised = model, self.on_denoised
        return twin

    def prompt_fn(self, config: SamplerConfig):
        """str → Prompt embeddings, each prompt encoded once (with the negative prompt when CFG needs it)."""
        guided = config.guidance != 1.0

        def prompt_of(text: str) -> Prompt:
            key = (text, guided)
            if key not in self._prompts:
                negative = self.text_encoder.encode(self.negative_prompt) if guided else None
                self._prompts[key] = Prompt(self.text_encoder.encode(text), negative)
            return self._prompts[key]

        return prompt_of

    # --- long videos -----------------------------------------------------------------------------------------------
    def new_plan(
        self, prompts: Sequence[str], num_segments: int, settings: GenerationSettings, image: torch.Tensor | None = None
    ) -> Plan:
        """An unplanned plan. image: optional first frame [3, H, W] in [-1, 1] (image-to-video layouts)."""
        image_latent = None
        if image is not None:
            expected = (3, settings.height, settings.width)
            if tuple(image.shape) != expected:
                raise ValueError(f"input image must be {expected} (channels, height, width), got {tuple(image.shape)}")
            image_latent = encode_keyframe_image(self.vae, image, 0)[:, None]
        return Plan.new(
            self.layout, settings, prompts, num_segments, self.fingerprint, self.negative_prompt, image_latent
        )

    def check_plan(self, plan: Plan) -> None:
        if plan.model_fingerprint != self.fingerprint:
            raise ValueError(
                f"plan was made with another model (fingerprint {plan.model_fingerprint}, this model {self.fingerprint})"
            )
        if plan.layout != self.layout:
            raise ValueError(f"plan uses layout {plan.layout.name}, this pipeline {self.layout.name}")

    def plan(self, plan: Plan, *, start: int = 0, on_step=None, on_segment=None, seconds=None) -> Plan:
        self.check_plan(plan)
        cfg = plan.settings.sampler
        return plan_chain(
            plan, self.sampler(cfg), self.vae, self.prompt_fn(cfg),
            start=start, on_step=on_step, on_segment=on_segment, seconds=seconds,
        )

    def populate(self, plan: Plan, *, segments: Sequence[int] | None = None, on_step=None, on_segment=None) -> Plan:
        self.check_plan(plan)
        cfg = plan.settings.sampler
        return populate_plan(
            plan, self.sampler(cfg), self.prompt_fn(cfg), segments=segments, on_step=on_step, on_segment=on_segment
        )

    def decode(self, plan: Plan, fix_joins: int = 0) -> torch.Tensor:
        return decode_video(plan, self.vae, fix_joins)

    def decode_stream(self, plan: Plan, fix_joins: int = 0):
        return decode_stream(plan, self.vae, fix_joins)

    def keyframe_images(self, plan: Plan, k: int) -> torch.Tensor:
        """Previews [K, 3, H, W] of segment k's keyframes, in `plan.layout.keyframes` order."""
        latents = plan.segments[k].latents
        if latents is None:
            raise ValueError(f"segment {k} is not planned")
        return decode_keyframes(self.vae, latents, plan.layout.keyframes)

    def steps_per_segment(self, plan: Plan, phase: str) -> int:
        """Denoising steps one segment takes in `phase` ("plan" or "populate"), for progress bars."""
        groups = self.layout.plan_groups if phase == "plan" else self.layout.populate_groups
        return plan.settings.sampler.steps * len(groups)

    # --- one segment (diagnostics) -------------------------------------------------------------------------------
    def generate_segment(
        self, prompt: str, settings: GenerationSettings, *, segment: int = 0, on_step=None
    ) -> SegmentVideo:
        """Plan then populate one segment from noise and decode it, keeping per-group timings."""
        sampler, text = self.sampler(settings.sampler), self.prompt_fn(settings.sampler)(prompt)
        planned = plan_segment(sampler, self.layout, text, settings.latent_shape, seed=settings.seed, segment=segment,
                               on_step=on_step, kv_dtype=settings.kv_dtype)
        populated = populate_segment(
            sampler, self.layout, text, planned.result, seed=settings.seed, segment=segment,
            boundary_weight=settings.boundary_weight, on_step=on_step, kv_dtype=settings.kv_dtype,
            noise_init=settings.noise_init,
        )
        start = time.perf_counter()
        with torch.no_grad():
            video = self.vae.decode(populated.result.latents[None].to(self.vae.device))[0].float().cpu()
        return SegmentVideo(video, populated.result, planned.timings + populated.timings, time.perf_counter() - start)
