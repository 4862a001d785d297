"""The Wan2.1 video VAE: diffusers' AutoencoderKLWan plus Wan's per-channel latent normalisation.

Wan2.1's VAE is causal in time: frame 0 is encoded alone and every later latent frame covers 4 pixel frames, so
T = 1 + 4k pixel frames ↔ 1 + k latent frames, and decoding a prefix of the latents gives a prefix of the video.
"""
from __future__ import annotations

import inspect
import json
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch
from diffusers import AutoencoderKLWan

TEMPORAL_STRIDE = 4
SPATIAL_STRIDE = 8


class WanVAE:
    """diffusers AutoencoderKLWan plus Wan's latent normalisation (z − mean) / std with Wan2.1's 16-channel constants.

    Latents are float32 whatever the VAE's dtype; videos are float32 in [-1, 1].
    """

    def __init__(
        self,
        vae: AutoencoderKLWan,
        latents_mean: Optional[Sequence[float]] = None,
        latents_std: Optional[Sequence[float]] = None,
    ):
        self.vae = vae.eval()
        mean = vae.config.latents_mean if latents_mean is None else latents_mean
        std = vae.config.latents_std if latents_std is None else latents_std
        z_dim = vae.config.z_dim
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1, 1)  # [1, z, 1, 1, 1]
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1, 1)
        if self.mean.shape[1] != z_dim or self.std.shape[1] != z_dim:
            raise ValueError(f"latents_mean/std need {z_dim} channels, got {self.mean.shape[1]}/{self.std.shape[1]}")

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def z_dim(self) -> int:
        return self.vae.config.z_dim

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents [B, z, F, h, w] → model latents (z − mean) / std, float32."""
        return (z.float() - self.mean.to(z.device)) / self.std.to(z.device)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Model latents [B, z, F, h, w] → raw VAE latents latents·std + mean, float32."""
        return latents.float() * self.std.to(latents.device) + self.mean.to(latents.device)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] in [-1, 1], T = 1 + 4k, H and W multiples of 8
        → normalised posterior means [B, 16, 1 + k, H/8, W/8] (float32, on the VAE's device)."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, T, H, W], got {tuple(video.shape)}")
        _, _, t, h, w = video.shape
        if (t - 1) % TEMPORAL_STRIDE or h % SPATIAL_STRIDE or w % SPATIAL_STRIDE:
            raise ValueError(f"video needs T = 1 + 4k frames and H, W multiples of 8, got T={t}, H={h}, W={w}")
        posterior = self.vae.encode(video.to(device=self.device, dtype=self.dtype)).latent_dist
        return self.normalize(posterior.mean)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents [B, 16, F, h, w] → video [B, 3, 1 + 4(F − 1), 8h, 8w] in [-1, 1] (float32)."""
        if latents.ndim != 5 or latents.shape[1] != self.z_dim:
            raise ValueError(f"latents must be [B, {self.z_dim}, F, h, w], got {tuple(latents.shape)}")
        z = self.denormalize(latents.to(self.device)).to(self.dtype)
        return self.vae.decode(z).sample.float().clamp(-1.0, 1.0)


def build_tiny_vae(base_dim: int = 8, seed: int = 0) -> WanVAE:
    """A randomly initialised Wan2.1-shaped VAE (16 latent channels, strides 4×8×8) for tests; the global RNG is
    left untouched. diffusers' default init keeps activations O(1), so outputs are finite and not saturated."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(
            base_dim=base_dim,
            z_dim=16,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=2,
            attn_scales=[],
            temperal_downsample=[False, True, True],
        )
    return WanVAE(vae.eval())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a single .safetensors / .pth / .pt / .ckpt file (torch.load with weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    while isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError("not a state dict of tensors")
    return sd


def _write_config(folder: str, sd: dict[str, torch.Tensor]) -> None:
    """config.json for an original-format (or diffusers-format) Wan2.1 VAE state dict: diffusers' defaults, with
    base_dim and z_dim read from the weights. Written by hand so no full-size model is built just to save it."""
    conv_in = sd.get("encoder.conv1.weight", sd.get("encoder.conv_in.weight"))  # [base_dim, 3, 3, 3, 3]
    post_quant = sd.get("conv2.weight", sd.get("post_quant_conv.weight"))  # [z_dim, z_dim, 1, 1, 1]
    if conv_in is None or post_quant is None:
        raise ValueError("no Wan VAE weights (encoder.conv1 / conv2) in this file")
    defaults = {
        name: p.default
        for name, p in inspect.signature(AutoencoderKLWan.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    config = {"_class_name": "AutoencoderKLWan", **defaults, "base_dim": conv_in.shape[0], "z_dim": post_quant.shape[0]}
    Path(folder, "config.json").write_text(json.dumps(config))


def load_wan_vae(path: str, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> WanVAE:
    """Load a Wan2.1 VAE offline from a diffusers folder (config.json + weights, or a pipeline folder with vae/)
    or from one original-format file (Wan2.1_VAE.pth, ComfyUI's wan_2.1_vae.safetensors, …)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"Wan VAE not found: {path}")
    try:
        if p.is_dir():
            sub = "vae" if not (p / "config.json").exists() and (p / "vae" / "config.json").exists() else None
            vae = AutoencoderKLWan.from_pretrained(str(p), subfolder=sub, torch_dtype=dtype, local_files_only=True)
        else:
            sd = _read_state_dict(p)
            with tempfile.TemporaryDirectory() as cfg_dir:
                _write_config(cfg_dir, sd)
                vae = AutoencoderKLWan.from_single_file(sd, config=cfg_dir, torch_dtype=dtype, local_files_only=True)
    except Exception as e:  # noqa: BLE001 — re-raised with the path named
        raise ValueError(f"could not load a Wan VAE from {path}: {type(e).__name__}: {e}") from e
    return WanVAE(vae.to(device).eval())  # dtype already set by torch_dtype


class OffloadedWanVAE(WanVAE):
    """A `WanVAE` whose weights stay in CPU memory and move to `device` only for each encode/decode call (the
    bridge and the final decode), so they do not sit on the GPU beside the DiT's KV caches."""

    def __init__(self, vae: WanVAE, device: torch.device | str):
        super().__init__(vae.vae.to("cpu"), vae.mean.flatten().tolist(), vae.std.flatten().tolist())
        self.exec_device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self.exec_device

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        self.vae.to(self.exec_device)
        try:
            return super().encode(video)
        finally:
            self.vae.to("cpu")

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.vae.to(self.exec_device)
        try:
            return super().decode(latents)
        finally:
            self.vae.to("cpu")
