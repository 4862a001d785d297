"""`mmpl train`: teacher-forcing training with a layout's mask, on the synthetic world or a folder of videos.

On a CPU it trains the tiny demo models; on a GPU it fine-tunes a Wan2.1 checkpoint (``--model FILE --vae DIR
--data FOLDER --layout wan-t2v --device cuda --dtype bfloat16``): the same loop, with FlexAttention block masks.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .common import CLIError


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a DiT with the MMPL (or AR) teacher-forcing mask")
    p.add_argument("--out", type=Path, required=True, help="training folder (checkpoints, loss log); resumes if present")
    p.add_argument("--data", default="synthetic", help="'synthetic' or a folder of videos (+ NAME.txt prompts)")
    p.add_argument("--model", default="demo", help="a size to train from scratch (demo, tiny, …) or a checkpoint")
    p.add_argument("--layout", default="mmpl-t2v-13", help="e.g. mmpl-t2v-13, wan-t2v, ar-13 (AR baseline)")
    p.add_argument("--latent-space", type=Path, help="PCA latent space (.safetensors) to encode clips with")
    p.add_argument("--vae", help="a Wan2.1 VAE to encode clips with (instead of --latent-space)")
    p.add_argument("--size", type=int, default=64, help="square clip size in pixels")
    p.add_argument("--clips", type=int, default=4096, help="synthetic clips in the latent pool")
    p.add_argument("--text-len", type=int, default=64, help="tokens of the hashed demo text encoder")
    p.add_argument("--text-context", type=int, choices=(0, 1), default=1,
                   help="hashed text encoder: 0 = word vectors only, 1 = word + bigram vectors (binds colour to shape)")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--minutes", type=float, help="wall-clock budget")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="cosine",
                   help="after the warm-up: constant, or cosine decay to 5%% of --lr at --steps")
    p.add_argument("--autocast", choices=("bfloat16",), help="matmuls in bf16 (fp32 master weights)")
    p.add_argument("--policy", choices=("all", "self_attn", "qk"), default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.set_defaults(func=run)


def _encoder(args):
    if args.latent_space is not None:
        from ..data.pca_latents import PCALatentSpace

        return PCALatentSpace.load(args.latent_space).encode
    if args.vae is not None:
        from ..vae import load_wan_vae

        return load_wan_vae(args.vae, device=args.device).encode
    raise CLIError("train needs --latent-space (a PCA latent space) or --vae to encode clips")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..checkpoints import CheckpointError, load_wan_model
    from ..layout import LayoutError, get_layout
    from ..model import WAN_CONFIGS, build_random_model
    from ..text import HashedTextEncoder
    from ..train.data import folder_pool, synthetic_pool
    from ..train.loop import Trainer, TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        layout = get_layout(args.layout)
    except LayoutError as err:
        raise CLIError(f"--layout: {err}") from err
    dtype = getattr(torch, args.dtype)
    if args.model in WAN_CONFIGS:
        model = build_random_model(WAN_CONFIGS[args.model], seed=args.seed, dtype=dtype)
    else:
        try:
            model = load_wan_model(args.model, dtype=dtype)
        except (CheckpointError, FileNotFoundError) as err:
            raise CLIError(f"--model: {err}") from err
    model = model.to(args.device).train()
    text_encoder = HashedTextEncoder(dim=model.text_embedding[0].weight.shape[1], text_len=args.text_len,
                                     context=args.text_context)
    encode = _encoder(args)
    t0 = time.perf_counter()
    if args.data == "synthetic":
        with tqdm(total=args.clips, desc="encoding clips", file=sys.stderr) as bar:
            pool = synthetic_pool(encode, text_encoder, clips=args.clips, latent_frames=layout.num_frames,
                                  size=args.size, seed=args.seed, progress=lambda n: bar.update(n - bar.n))
    else:
        pool = folder_pool(args.data, encode, text_encoder, latent_frames=layout.num_frames, size=args.size,
                           seed=args.seed)
    print(f"{len(pool)} clips encoded in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    config = TrainConfig(steps=args.steps, minutes=args.minutes, batch=args.batch, lr=args.lr, policy=args.policy,
                         seed=args.seed, lr_schedule=args.lr_schedule, autocast=args.autocast)
    trainer = Trainer(model, layout, config, args.out)
    if trainer.load():
        print(f"resuming {args.out} at step {trainer.step}", file=sys.stderr)
    with tqdm(total=config.steps, initial=trainer.step, desc="training", file=sys.stderr) as bar:
        def on_log(record):
            bar.update(record["step"] - bar.n)
            bar.set_postfix(loss=f"{record['loss']:.4f}")

        try:
            trainer.fit(pool, on_log=on_log)
        except KeyboardInterrupt:
            print(f"\ninterrupted at step {trainer.step}; checkpoint saved in {args.out}", file=sys.stderr)
            return 130
    print(f"trained to step {trainer.step}; checkpoints in {args.out}")
    return 0
