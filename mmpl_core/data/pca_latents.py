"""A fixed linear latent space with the Wan2.1 VAE's geometry, for a tiny demo model trained on CPU.

Wan2.1's VAE maps T = 1 + 4k pixel frames to 1 + k latent frames of 16 channels at 1/8 of the size, frame 0 being
encoded alone. Here frame 0 is repeated 4× to make a first 4-frame block; every 4-frame block of 8×8 pixel patches
(4·8·8·3 = 768 values, flattened in (t, y, x, rgb) order) is mean-centred and projected on the top 16 principal
directions of patches of synthetic videos, and each channel is divided by its standard deviation over the fit data,
so latents are ≈ zero-mean, unit-variance like normalised Wan latents. Decoding maps back linearly; frame 0 is the
mean of the first latent's 4 sub-frames (the projection onto "4 equal frames", never worse than any one of them).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Union

import torch

T_STRIDE, S_STRIDE, CHANNELS = 4, 8, 16
PATCH = T_STRIDE * S_STRIDE * S_STRIDE * 3  # 768


def _check_video(video: torch.Tensor) -> None:
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"video must be [B, 3, T, H, W], got {tuple(video.shape)}")
    _, _, t, h, w = video.shape
    if (t - 1) % T_STRIDE or h % S_STRIDE or w % S_STRIDE:
        raise ValueError(f"video needs T = 1 + 4k frames and H, W multiples of 8, got T={t}, H={h}, W={w}")


def patchify(video: torch.Tensor) -> torch.Tensor:
    """video [B, 3, 1 + 4k, H, W] → patches [B, 1 + k, H/8, W/8, 768] (frame 0 repeated into the first block)."""
    _check_video(video)
    b, _, _, h, w = video.shape
    x = torch.cat([video[:, :, :1].expand(-1, -1, T_STRIDE - 1, -1, -1), video], dim=2)  # [B, 3, 4F, H, W]
    f = x.shape[2] // T_STRIDE
    x = x.reshape(b, 3, f, T_STRIDE, h // S_STRIDE, S_STRIDE, w // S_STRIDE, S_STRIDE)
    return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, f, h // S_STRIDE, w // S_STRIDE, PATCH)


def unpatchify(patches: torch.Tensor) -> torch.Tensor:
    """patches [B, F, h, w, 768] → video [B, 3, 1 + 4(F − 1), 8h, 8w]; frame 0 = mean of the first block."""
    b, f, h, w, _ = patches.shape
    x = patches.reshape(b, f, h, w, T_STRIDE, S_STRIDE, S_STRIDE, 3).permute(0, 7, 1, 4, 2, 5, 3, 6)
    x = x.reshape(b, 3, f * T_STRIDE, h * S_STRIDE, w * S_STRIDE)
    return torch.cat([x[:, :, :T_STRIDE].mean(dim=2, keepdim=True), x[:, :, T_STRIDE:]], dim=2)


class PCALatentSpace:
    """mean [768], basis [16, 768] (orthonormal rows), scale [16]: latent = basis·(patch − mean) / scale."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor):
        if mean.shape != (PATCH,) or basis.shape != (CHANNELS, PATCH) or scale.shape != (CHANNELS,):
            raise ValueError(f"bad PCA shapes: mean {tuple(mean.shape)}, basis {tuple(basis.shape)}, "
                             f"scale {tuple(scale.shape)}")
        self.mean, self.basis, self.scale = mean.float(), basis.float(), scale.float()

    @property
    def z_dim(self) -> int:
        return CHANNELS

    # The pipeline treats this like a `WanVAE` (encode / decode / device / dtype): a causal, exact-per-block codec.
    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    @classmethod
    def fit(cls, videos: Union[torch.Tensor, Iterable[torch.Tensor]]) -> "PCALatentSpace":
        """Fit on videos [B, 3, T, H, W] in [-1, 1] (one tensor, or an iterable of such batches to save memory)."""
        batches = [videos] if isinstance(videos, torch.Tensor) else videos
        n, total, gram = 0, torch.zeros(PATCH, dtype=torch.float64), torch.zeros(PATCH, PATCH, dtype=torch.float64)
        for batch in batches:
            p = patchify(batch.float()).reshape(-1, PATCH).double()
            n += p.shape[0]
            total += p.sum(0)
            gram += p.T @ p
        if n < CHANNELS + 1:
            raise ValueError(f"need at least {CHANNELS + 1} patches to fit, got {n}")
        mean = total / n
        cov = (gram - n * torch.outer(mean, mean)) / (n - 1)
        eigval, eigvec = torch.linalg.eigh(cov)  # ascending
        basis = eigvec[:, -CHANNELS:].flip(1).T.contiguous()  # [16, 768], largest variance first
        signs = torch.sign(basis.gather(1, basis.abs().argmax(1, keepdim=True)))  # deterministic sign: max entry > 0
        basis = basis * signs
        scale = eigval[-CHANNELS:].flip(0).clamp_min(1e-12).sqrt()
        return cls(mean.float(), basis.float(), scale.float())

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, 1 + 4k, H, W] in [-1, 1] → latents [B, 16, 1 + k, H/8, W/8] (float32)."""
        p = patchify(video.float().to(self.mean.device))
        z = (p - self.mean) @ self.basis.T / self.scale  # [B, F, h, w, 16]
        return z.permute(0, 4, 1, 2, 3).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, 16, F, h, w] → video [B, 3, 1 + 4(F − 1), 8h, 8w] clamped to [-1, 1] (float32)."""
        if latents.ndim != 5 or latents.shape[1] != CHANNELS:
            raise ValueError(f"latents must be [B, {CHANNELS}, F, h, w], got {tuple(latents.shape)}")
        z = latents.float().to(self.mean.device).permute(0, 2, 3, 4, 1)
        return unpatchify((z * self.scale) @ self.basis + self.mean).clamp(-1, 1)

    def to(self, device) -> "PCALatentSpace":
        return PCALatentSpace(self.mean.to(device), self.basis.to(device), self.scale.to(device))

    def save(self, path: Union[str, Path]) -> None:
        from safetensors.torch import save_file

        meta = {"format": "mmpl-pca-latents", "version": "1", "layout": json.dumps(
            {"t_stride": T_STRIDE, "s_stride": S_STRIDE, "channels": CHANNELS, "patch_order": "t,y,x,rgb"})}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file({"mean": self.mean.contiguous(), "basis": self.basis.contiguous(), "scale": self.scale.contiguous()},
                  str(path), metadata=meta)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "PCALatentSpace":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            if (f.metadata() or {}).get("format") != "mmpl-pca-latents":
                raise ValueError(f"{path} is not a PCA latent space (metadata format != mmpl-pca-latents)")
            return cls(f.get_tensor("mean"), f.get_tensor("basis"), f.get_tensor("scale"))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(4.0 / mse)).item()
