"""Flow-matching sampling of one latent chunk with diffusers' schedulers, and order-free per-chunk noise.

Convention (Wan2.1 / rectified flow): x_σ = (1 − σ)·x0 + σ·ε, the model predicts the velocity v = ε − x0 and is
conditioned on the timestep t = 1000·σ. A chunk is sampled from pure noise (σ ≈ 1) down to σ = 0.

The schedule is the official Wan2.1 one (``FlowUniPCMultistepScheduler.set_timesteps(steps, shift=shift)``):
σ_i = linspace(0.999, 0, steps + 1)[:-1], shifted σ' = shift·σ / (1 + (shift − 1)·σ), a final σ = 0, and
timesteps t_i = int64(1000·σ'_i) — 999, 995, 991, …, 302, 241, 172, 92 for 50 steps and shift 5. diffusers'
own flow schedule (``set_timesteps(steps)`` with ``use_flow_sigmas``) differs: it starts from linspace(1, 1/1000)
(σ_0 = 1 − 1e-6, …, last timestep 96 instead of 92), so `make_scheduler` hands the official unshifted sigmas to
``set_timesteps(sigmas=...)``, which applies the same shift; the result matches the official sigmas to float32
rounding and the UniPC timesteps exactly.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

SOLVERS: tuple[str, ...] = ("unipc", "euler")
NUM_TRAIN_TIMESTEPS = 1000
# The official scheduler's sigma_max: 1 − 1/1000 stored in float32 (its training sigmas are a float32 tensor).
SIGMA_MAX = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class SamplerConfig:
    """How a chunk is denoised. ``guidance`` is the classifier-free guidance scale, applied by the caller's
    velocity function (1.0 = conditional branch only)."""

    solver: str = "unipc"
    steps: int = 50
    shift: float = 5.0
    guidance: float = 5.0

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"SamplerConfig.solver must be one of {SOLVERS}, got {self.solver!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) or self.steps < 1:
            raise ValueError(f"SamplerConfig.steps must be an int >= 1, got {self.steps!r}")
        if not self.shift > 0:
            raise ValueError(f"SamplerConfig.shift must be > 0, got {self.shift!r}")
        if not self.guidance >= 0:
            raise ValueError(f"SamplerConfig.guidance must be >= 0, got {self.guidance!r}")


WAN_DEFAULT = SamplerConfig()  # Wan2.1 / official MMPL settings: UniPC, 50 steps, shift 5, CFG 5


def official_sigmas(steps: int) -> np.ndarray:
    """The official unshifted sigmas [steps]: linspace(0.999, 0, steps + 1) without its final 0."""
    return np.linspace(SIGMA_MAX, 0.0, steps + 1)[:-1]


def make_scheduler(cfg: SamplerConfig):
    """A fresh diffusers scheduler for ``cfg`` with the official schedule set (``timesteps`` [steps],
    ``sigmas`` [steps + 1] ending at 0).

    UniPC is configured as Wan2.1's FlowUniPCMultistepScheduler (flow prediction, order 2, bh2, predict-x0, lower-order
    final step, final sigma 0); its timesteps are int64 (truncated 1000·σ, as in Wan2.1). Euler's are float 1000·σ.
    """
    if cfg.solver == "unipc":
        sched = UniPCMultistepScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=cfg.shift,
            solver_order=2,
            solver_type="bh2",
            predict_x0=True,
            lower_order_final=True,
            final_sigmas_type="zero",
        )
    else:
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=cfg.shift)
    sched.set_timesteps(sigmas=official_sigmas(cfg.steps))
    # Integer timesteps can repeat for large step counts; index by position, not by timestep lookup.
    sched.set_begin_index(0)
    return sched


@dataclass(frozen=True)
class HeldValues:
    """Parts of a chunk that are given rather than sampled (replacement sampling): where `mask` (bool, broadcastable
    to the chunk) is set, the sample is `values` (the chunk's shape) noised to the current σ with the chunk's own
    noise before every model evaluation, and exactly `values` at the end."""

    mask: torch.Tensor
    values: torch.Tensor


def sample_chunk(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    cfg: SamplerConfig,
    callback: Optional[StepCallback] = None,
    held: Optional[HeldValues] = None,
) -> torch.Tensor:
    """Integrate the flow from pure noise to a clean sample with a fresh scheduler.

    Args:
        velocity_fn: ``(x, t) -> v``; x has noise's shape, dtype and device, t is a 0-dim float32 timestep in
            [0, 1000] (the scheduler's ``timesteps[i]``, i.e. 1000·σ) on noise's device; v ≈ ε − x0, same shape.
        noise: ε, any shape (e.g. latents [B, 16, F, H, W]).
        cfg: solver, steps and shift (guidance is the caller's business).
        callback: ``callback(i, steps)`` after step i (0-based) finishes.
        held: values the sample is held to (replacement sampling): the rest of the chunk is denoised seeing them
            at the noise level of each step, so it bends toward them; they come out exactly as given.

    Returns:
        x0 with noise's shape and dtype. The solver state is kept in float32 whatever noise's dtype.
    """
    sched = make_scheduler(cfg)
    total = len(sched.timesteps)
    x = noise.to(torch.float32)
    if held is not None:
        mask = held.mask.to(noise.device)
        values, eps = held.values.to(noise.device, torch.float32), noise.to(torch.float32)
    for i, t in enumerate(sched.timesteps):
        if held is not None:
            sigma = float(sched.sigmas[i])
            x = torch.where(mask, (1.0 - sigma) * values + sigma * eps, x)
        v = velocity_fn(x.to(noise.dtype), t.to(device=noise.device, dtype=torch.float32))
        x = sched.step(v.to(torch.float32), t, x, return_dict=False)[0]
        if callback is not None:
            callback(i, total)
    if held is not None:
        x = torch.where(mask, values, x)
    return x.to(noise.dtype)


def chunk_seed(seed: int, segment: int, group: int) -> int:
    """A 63-bit seed for chunk (segment, group) of a run, hashed with numpy's SeedSequence (all must be >= 0)."""
    if min(seed, segment, group) < 0:
        raise ValueError(f"chunk_seed needs non-negative seed/segment/group, got {(seed, segment, group)}")
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(segment), int(group))).generate_state(
        2, dtype=np.uint64
    )
    return int(state[0]) & ((1 << 63) - 1)


def chunk_noise(
    seed: int,
    segment: int,
    group: int,
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """N(0, I) noise of ``shape`` for one chunk: drawn in float32 on a CPU generator seeded by `chunk_seed`, then
    moved to ``device``/``dtype``, so it never depends on the device, the chunk order or the worker count."""
    gen = torch.Generator(device="cpu").manual_seed(chunk_seed(seed, segment, group))
    eps = torch.randn(tuple(shape), generator=gen, dtype=torch.float32, device="cpu")
    return eps.to(device=device, dtype=dtype)
