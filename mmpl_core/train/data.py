"""Training clips: latent pools built once from the synthetic world or from a folder of videos."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..text import HashedTextEncoder

EncodeFn = Callable[[torch.Tensor], torch.Tensor]  # video [B, 3, T, H, W] in [-1, 1] → latents [B, C, F, h, w]


class LatentPool:
    """Clean latent clips [M, C, N, h, w] (stored in float16) with one prompt each; `batch(step, size)` draws a
    seeded random batch, so training is reproducible and resumable without saving any sampler state."""

    def __init__(self, latents: torch.Tensor, prompts: Sequence[str], text_encoder: HashedTextEncoder, seed: int = 0):
        if latents.shape[0] != len(prompts) or latents.shape[0] == 0:
            raise ValueError(f"need one prompt per clip, got {latents.shape[0]} clips and {len(prompts)} prompts")
        self.latents = latents.to(torch.float16)
        self.prompts = list(prompts)
        self.text_encoder = text_encoder
        self.seed = seed

    def __len__(self) -> int:
        return self.latents.shape[0]

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 7_919 + step)
        index = torch.randint(len(self), (size,), generator=gen)
        text = self.text_encoder.encode_batch([self.prompts[i] for i in index.tolist()])
        return self.latents[index].float(), text


def synthetic_pool(
    encode: EncodeFn, text_encoder: HashedTextEncoder, *, clips: int, latent_frames: int, size: int = 64,
    seed: int = 0, chunk: int = 32, progress: Callable[[int], None] | None = None,
) -> LatentPool:
    """Render `clips` synthetic-world videos of 1 + 4(N−1) frames and encode them once."""
    from ..data.synthetic import make_batch

    frames = 1 + 4 * (latent_frames - 1)
    latents, prompts = [], []
    with torch.no_grad():
        for i, start in enumerate(range(0, clips, chunk)):
            videos, texts = make_batch(seed * 100_003 + i, min(chunk, clips - start), frames, size, size)
            latents.append(encode(videos).to(torch.float16).cpu())
            prompts.extend(texts)
            if progress is not None:
                progress(len(prompts))
    return LatentPool(torch.cat(latents), prompts, text_encoder, seed)


def _read_video(path: Path, size: int) -> np.ndarray:
    import imageio_ffmpeg
    from PIL import Image

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = []
    for raw in reader:
        img = Image.frombytes("RGB", (width, height), raw)
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        frames.append(np.asarray(img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)))
    return np.stack(frames) if frames else np.zeros((0, size, size, 3), np.uint8)


def folder_pool(
    folder: str | Path, encode: EncodeFn, text_encoder: HashedTextEncoder, *, latent_frames: int, size: int,
    seed: int = 0, stride: int | None = None,
) -> LatentPool:
    """Cut every video of a folder (mp4/webm/mov/mkv/gif) into clips of 1 + 4(N−1) frames (centre-cropped to a
    square of `size`) and encode them; a sidecar NAME.txt gives the clip prompts (empty otherwise)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mp4", ".webm", ".mov", ".mkv", ".gif"))
    if not files:
        raise ValueError(f"no videos (.mp4, .webm, .mov, .mkv, .gif) in {folder}")
    frames = 1 + 4 * (latent_frames - 1)
    stride = stride or frames
    latents, prompts = [], []
    for path in files:
        video = _read_video(path, size)
        prompt = path.with_suffix(".txt").read_text().strip() if path.with_suffix(".txt").exists() else ""
        for start in range(0, len(video) - frames + 1, stride):
            clip = torch.from_numpy(video[start : start + frames]).permute(3, 0, 1, 2).float() / 127.5 - 1
            with torch.no_grad():
                latents.append(encode(clip[None]).to(torch.float16).cpu())
            prompts.append(prompt)
    if not latents:
        raise ValueError(f"no video in {folder} has the {frames} frames a clip needs")
    return LatentPool(torch.cat(latents), prompts, text_encoder, seed)
