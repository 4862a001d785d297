"""Distil a tiny real diffusers `AutoencoderKLWan` into the fixed PCA latent space (CPU, wall-clock budget).

The demo DiT works in the PCA latent space (`pca_latents.py`); this makes an ordinary Wan2.1-shaped VAE (base_dim 16,
16 latent channels, strides 4×8×8) speak it, so `mmpl_core.vae.WanVAE(vae)` — which normalises raw latents with
Wan's default latents_mean/std from the config, (z − mean) / std — encodes synthetic videos to the PCA latents and
decodes PCA latents to pixels. The encoder regresses the PCA latents (L1 + MSE on the normalised posterior mean);
the decoder reconstructs the *original* pixels from the PCA latents plus a little noise (σ = 0.1) for robustness.
Training uses random 8-aligned crops (the model is fully convolutional); evaluation uses full 64×64 videos.

Output (`main`): one safetensors file of fp16 weights under diffusers key names (metadata: format, config) and
`NAME.config.json` next to it. `mmpl_core.vae.load_wan_vae(file)` loads the single file (its config is diffusers'
defaults with base_dim and z_dim read from the weights, which is exactly this model). ComfyUI's stock VAE loader
only recognises Wan2.1 VAEs under the original key names (`decoder.middle.0.residual.0.gamma`, …): `--original-keys`
writes those instead (`original_state_dict`), which load_wan_vae loads too.

    python -m mmpl_core.data.distill_vae --pca assets/demo/pca_latents.safetensors --minutes 10 \
        --out assets/demo/vae.safetensors
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan

from .pca_latents import PCALatentSpace, psnr
from .synthetic import make_batch

VAE_CONFIG = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                  temperal_downsample=[False, True, True])
EVAL_SEED = 987_654_321  # held-out scenes (training batches use seeds seed·10⁶ + step)


def build_vae(seed: int = 0) -> AutoencoderKLWan:
    """The tiny Wan2.1-shaped VAE, seeded (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKLWan(**VAE_CONFIG)


def _norm(vae: AutoencoderKLWan) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
    return mean, std


def _crop(video: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """A random size×size crop per video, aligned to the 8-px latent grid."""
    h, w = video.shape[-2:]
    if size >= min(h, w):
        return video
    ys = torch.randint(0, (h - size) // 8 + 1, (video.shape[0],), generator=gen) * 8
    xs = torch.randint(0, (w - size) // 8 + 1, (video.shape[0],), generator=gen) * 8
    return torch.stack([v[..., y : y + size, x : x + size] for v, y, x in zip(video, ys.tolist(), xs.tolist())])


def _l1_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(a, b) + F.mse_loss(a, b)


@torch.no_grad()
def evaluate(vae: AutoencoderKLWan, pca: PCALatentSpace, videos: torch.Tensor) -> dict[str, float]:
    """Full-size figures: encoder latent RMSE vs the PCA latents, PSNR of the decoder on PCA latents, of the whole
    autoencoder (encode → decode) and of the PCA space itself (the ceiling the VAE imitates)."""
    from ..vae import WanVAE

    was_training = vae.training
    wan = WanVAE(vae)  # puts vae in eval mode
    target = pca.encode(videos)
    z = wan.encode(videos)
    out = {
        "enc_rmse": (z - target).pow(2).mean().sqrt().item(),
        "dec_psnr": psnr(wan.decode(target), videos),
        "ae_psnr": psnr(wan.decode(z), videos),
        "pca_psnr": psnr(pca.decode(target), videos),
    }
    vae.train(was_training)
    return out


def distill(pca: PCALatentSpace, minutes: float, seed: int = 0, log: Callable[[str], None] = print, *,
            batch: int = 4, frames: int = 9, crop: int = 32, lr: float = 1e-3, noise: float = 0.1,
            eval_videos: int = 4, eval_every: float = 60.0, history: Optional[list] = None,
            init: Optional[AutoencoderKLWan] = None) -> AutoencoderKLWan:
    """Train for `minutes` of wall clock (at least one step) and return the VAE in eval mode. Every `eval_every`
    seconds and at the end: mean losses since the last report and `evaluate` on `eval_videos` held-out 64×64 videos
    of `frames` frames; each record also goes to `history` when given. lr follows a cosine over the time budget.
    `init` continues from an earlier VAE (e.g. a saved run) instead of a fresh seeded one."""
    vae = (build_vae(seed) if init is None else init.float()).train()
    mean, std = _norm(vae)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    held_out, _ = make_batch(EVAL_SEED + seed, eval_videos, frames, 64, 64)
    budget, t0 = minutes * 60.0, time.perf_counter()
    step, last_eval, sums = 0, t0, {"enc": 0.0, "dec": 0.0, "n": 0}

    def report(final: bool) -> None:
        n = max(sums["n"], 1)
        record = {"step": step, "minutes": round((time.perf_counter() - t0) / 60, 2),
                  "enc_loss": sums["enc"] / n, "dec_loss": sums["dec"] / n, **evaluate(vae, pca, held_out)}
        if history is not None:
            history.append(record)
        log(("final " if final else "") + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                 for k, v in record.items()))
        sums.update(enc=0.0, dec=0.0, n=0)

    while step == 0 or time.perf_counter() - t0 < budget:
        frac = min((time.perf_counter() - t0) / budget, 1.0) if budget > 0 else 1.0
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        videos, _ = make_batch(seed * 1_000_000 + step, batch, frames, 64, 64)
        videos = _crop(videos, crop, gen)
        target = pca.encode(videos)
        mu = vae.encode(videos).latent_dist.mean
        enc_loss = _l1_mse((mu - mean) / std, target)
        z = (target + noise * torch.randn(target.shape, generator=gen)) * std + mean
        dec_loss = _l1_mse(vae.decode(z).sample, videos)
        opt.zero_grad(set_to_none=True)
        (enc_loss + dec_loss).backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        sums["enc"] += enc_loss.item()
        sums["dec"] += dec_loss.item()
        sums["n"] += 1
        if time.perf_counter() - last_eval >= eval_every and time.perf_counter() - t0 < budget:
            report(final=False)
            last_eval = time.perf_counter()
    report(final=True)
    return vae.eval()


def _to_original(key: str) -> str:
    """One diffusers AutoencoderKLWan key → the original Wan2.1 (and ComfyUI) name."""
    res = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
           "conv2": "residual.6", "conv_shortcut": "shortcut"}

    def block(rest: str) -> str:
        for new, old in res.items():
            if rest == new or rest.startswith(new + "."):
                return old + rest[len(new):]
        return rest  # resample.1.*, time_conv.*, attention names are shared

    parts = key.split(".")
    top = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
    if parts[0] in top:
        return ".".join([top[parts[0]]] + parts[1:])
    side, name, rest = parts[0], parts[1], parts[2:]
    if name in ("conv_in", "conv_out", "norm_out"):
        head = {"conv_in": "conv1", "conv_out": "head.2", "norm_out": "head.0"}[name]
        return ".".join([side, head] + rest)
    if name == "mid_block":  # mid_block.resnets.{0,1} / attentions.0 → middle.{0,2} / middle.1
        index = 1 if rest[0] == "attentions" else 2 * int(rest[1])
        tail = ".".join(rest[2:])
        return f"{side}.middle.{index}." + (tail if rest[0] == "attentions" else block(tail))
    if name == "down_blocks":  # a flat list in both
        return f"{side}.downsamples.{rest[0]}." + block(".".join(rest[1:]))
    if name == "up_blocks":  # up_blocks.i.resnets.j / up_blocks.i.upsamplers.0 → upsamples.(4i + j) / (4i + 3)
        i = int(rest[0])
        if rest[1] == "resnets":
            return f"{side}.upsamples.{4 * i + int(rest[2])}." + block(".".join(rest[3:]))
        return f"{side}.upsamples.{4 * i + 3}." + ".".join(rest[3:])
    raise KeyError(f"unexpected Wan VAE key {key}")


def original_state_dict(vae: AutoencoderKLWan) -> dict[str, torch.Tensor]:
    """The weights under the original Wan2.1 names (what ComfyUI's VAE loader detects), checked by mapping them back
    with diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    sd = vae.state_dict()
    orig = {_to_original(k): v for k, v in sd.items()}
    back = convert_wan_vae_to_diffusers(dict(orig))
    if set(back) != set(sd) or any(back[k] is not sd[k] for k in sd):
        raise RuntimeError("original-key export does not map back onto the diffusers keys")
    return orig


def save_vae(vae: AutoencoderKLWan, path: str | Path, original_keys: bool = False) -> Path:
    """fp16 safetensors (diffusers key names unless original_keys) + NAME.config.json next to it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = original_state_dict(vae) if original_keys else vae.state_dict()
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    config = {"_class_name": "AutoencoderKLWan", **config}
    meta = {"format": "wan-original" if original_keys else "diffusers", "config": json.dumps(config)}
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}, str(path), metadata=meta)
    path.with_name(path.stem + ".config.json").write_text(json.dumps(config, indent=1) + "\n")
    return path


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pca", type=Path, required=True, help="PCA latent space (.safetensors); fitted and saved here "
                   "first when missing")
    p.add_argument("--out", type=Path, required=True, help="output .safetensors (fp16, + NAME.config.json)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=9, help="training clip length (1 + 4k pixel frames)")
    p.add_argument("--init", type=Path, help="continue from a saved VAE (any format load_wan_vae reads)")
    p.add_argument("--fit-videos", type=int, default=512, help="videos (33 frames, 64×64) to fit a missing PCA on")
    p.add_argument("--original-keys", action="store_true", help="save under the original Wan2.1 / ComfyUI names")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.pca.exists():
        t0 = time.perf_counter()
        pca = PCALatentSpace.fit(make_batch(10_000 + i, 16, 33)[0] for i in range(0, args.fit_videos, 16))
        pca.save(args.pca)
        test, _ = make_batch(EVAL_SEED + 1, 32, 33)
        print(f"PCA fitted on {args.fit_videos} videos in {time.perf_counter() - t0:.1f} s: held-out PSNR "
              f"{psnr(pca.decode(pca.encode(test)), test):.2f} dB → {args.pca}", flush=True)
    pca = PCALatentSpace.load(args.pca)
    init = None
    if args.init is not None:
        from ..vae import load_wan_vae

        init = load_wan_vae(str(args.init)).vae
    vae = distill(pca, args.minutes, seed=args.seed, log=lambda s: print(s, flush=True), frames=args.frames,
                  init=init)
    path = save_vae(vae, args.out, original_keys=args.original_keys)
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
