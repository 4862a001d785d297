"""A fixed linear latent space with the Wan2.1 VAE's geometry, for a tiny demo model trained on CPU.

Wan2.1's VAE maps T = 1 + 4k pixel frames to 1 + k latent frames of 16 channels at 1/8 of the size, frame 0 being
encoded alone. Here frame 0 is repeated 4× to make a first 4-frame block; every 4-frame block of 8×8 pixel patches
(4·8·8·3 = 768 values, flattened in (t, y, x, rgb) order) is mean-centred and projected on the top 16 principal
directions of patches of synthetic videos, and each channel is divided by its standard deviation over the fit data,
so latents are ≈ zero-mean, unit-variance like normalised Wan latents. Decoding maps back linearly; frame 0 is the
mean of the first latent's 4 sub-frames (the projection onto "4 equal frames", never worse than any one of them).

Decoding each block from its own latent alone makes its reconstruction error independent of its neighbours', so a
video jumps every 4 frames. The windowed decoder (`fit_window_decoder`) instead reconstructs each 4×8×8 block
from the latents of a 3×3×3 window around it (the previous, own and next latent frame; the 8 neighbouring patches):
a linear map fitted by least squares on synthetic videos, like the encoder, which stays the exact PCA projection.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Union

import torch

T_STRIDE, S_STRIDE, CHANNELS = 4, 8, 16
PATCH = T_STRIDE * S_STRIDE * S_STRIDE * 3  # 768
WINDOW = (3, 3, 3)  # latent frames × rows × columns the windowed decoder reads around each block
WINDOW_INPUTS = CHANNELS * WINDOW[0] * WINDOW[1] * WINDOW[2] + 1  # + a constant (the bias row)
RIDGE = 1e-3  # of the window decoder's least squares, relative to the mean diagonal of the normal equations


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


def windows(latents: torch.Tensor) -> torch.Tensor:
    """latents [B, 16, F, h, w] → the windowed decoder's inputs [B, F, h, w, WINDOW_INPUTS]: each position's 3×3×3
    neighbourhood (edges repeated) flattened, and a constant 1."""
    b, c, f, h, w = latents.shape
    padded = torch.nn.functional.pad(latents.float(), (1, 1, 1, 1, 1, 1), mode="replicate")
    parts = [padded[:, :, dt : dt + f, dy : dy + h, dx : dx + w]
             for dt in range(WINDOW[0]) for dy in range(WINDOW[1]) for dx in range(WINDOW[2])]
    stacked = torch.stack(parts, dim=-1).permute(0, 2, 3, 4, 1, 5).reshape(b, f, h, w, -1)  # channel-major
    return torch.cat([stacked, stacked.new_ones(b, f, h, w, 1)], dim=-1)


class PCALatentSpace:
    """mean [768], basis [16, 768] (orthonormal rows), scale [16]: latent = basis·(patch − mean) / scale.

    window_decoder [WINDOW_INPUTS, 768] (optional): decode = windows(latents) @ window_decoder instead of the block
    decoder's basis transpose (see the module docstring)."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor,
                 window_decoder: torch.Tensor | None = None):
        if mean.shape != (PATCH,) or basis.shape != (CHANNELS, PATCH) or scale.shape != (CHANNELS,):
            raise ValueError(f"bad PCA shapes: mean {tuple(mean.shape)}, basis {tuple(basis.shape)}, "
                             f"scale {tuple(scale.shape)}")
        if window_decoder is not None and window_decoder.shape != (WINDOW_INPUTS, PATCH):
            raise ValueError(f"window decoder must be [{WINDOW_INPUTS}, {PATCH}], got {tuple(window_decoder.shape)}")
        self.mean, self.basis, self.scale = mean.float(), basis.float(), scale.float()
        self.window_decoder = None if window_decoder is None else window_decoder.float()

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
        z = latents.float().to(self.mean.device)
        if self.window_decoder is not None:
            return unpatchify(windows(z) @ self.window_decoder).clamp(-1, 1)
        return unpatchify((z.permute(0, 2, 3, 4, 1) * self.scale) @ self.basis + self.mean).clamp(-1, 1)

    def block_decoder(self) -> "PCALatentSpace":
        """This latent space decoding each block from its own latent (the exact inverse on its span)."""
        return PCALatentSpace(self.mean, self.basis, self.scale)

    def fit_window_decoder(self, videos: Union[torch.Tensor, Iterable[torch.Tensor]]) -> "PCALatentSpace":
        """This latent space with a windowed decoder fitted on `videos` [B, 3, T, H, W] in [-1, 1] (a tensor or
        batches): ridge least squares from `windows(encode(video))` to the video's 4×8×8 blocks."""
        batches = [videos] if isinstance(videos, torch.Tensor) else videos
        gram = torch.zeros(WINDOW_INPUTS, WINDOW_INPUTS, dtype=torch.float64)
        cross = torch.zeros(WINDOW_INPUTS, PATCH, dtype=torch.float64)
        for batch in batches:
            x = windows(self.encode(batch)).reshape(-1, WINDOW_INPUTS).double()
            y = patchify(batch.float().to(self.mean.device)).reshape(-1, PATCH).double()
            gram += x.T @ x
            cross += x.T @ y
        ridge = RIDGE * gram.diagonal().mean() * torch.eye(WINDOW_INPUTS, dtype=torch.float64)
        weights = torch.linalg.solve(gram + ridge, cross)
        return PCALatentSpace(self.mean, self.basis, self.scale, weights.float())

    def to(self, device) -> "PCALatentSpace":
        window = None if self.window_decoder is None else self.window_decoder.to(device)
        return PCALatentSpace(self.mean.to(device), self.basis.to(device), self.scale.to(device), window)

    def save(self, path: Union[str, Path]) -> None:
        from safetensors.torch import save_file

        meta = {"format": "mmpl-pca-latents", "version": "1", "layout": json.dumps(
            {"t_stride": T_STRIDE, "s_stride": S_STRIDE, "channels": CHANNELS, "patch_order": "t,y,x,rgb"})}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": self.mean.contiguous(), "basis": self.basis.contiguous(), "scale": self.scale.contiguous()}
        if self.window_decoder is not None:
            tensors["window_decoder"] = self.window_decoder.contiguous()
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "PCALatentSpace":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            if (f.metadata() or {}).get("format") != "mmpl-pca-latents":
                raise ValueError(f"{path} is not a PCA latent space (metadata format != mmpl-pca-latents)")
            window = f.get_tensor("window_decoder") if "window_decoder" in f.keys() else None
            return cls(f.get_tensor("mean"), f.get_tensor("basis"), f.get_tensor("scale"), window)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(4.0 / mse)).item()


def fit_world_window_decoder(space: PCALatentSpace, videos: int = 512, frames: int = 33, batch: int = 16
                             ) -> PCALatentSpace:
    """`space` with a windowed decoder fitted on `videos` synthetic-world videos of `frames` frames (the demo's recipe:
    `make_batch(10000 + i, batch, frames)`, i = 0, batch, …; the PCA basis was fitted on the same videos)."""
    from .synthetic import make_batch

    return space.fit_window_decoder(make_batch(10000 + i, batch, frames)[0] for i in range(0, videos, batch))


if __name__ == "__main__":  # python -m mmpl_core.data.pca_latents SPACE.safetensors: add the windowed decoder
    import sys

    path = Path(sys.argv[1])
    fit_world_window_decoder(PCALatentSpace.load(path).block_decoder()).save(path)
    print(f"windowed decoder fitted and saved into {path}")
