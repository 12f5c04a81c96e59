"""Rectified flow: x_t = (1 − t)·x0 + t·ε, velocity target ε − x0.

Timesteps come from the logit-normal L(m, s) of SD3 (Esser et al., 2024), optionally
shifted; sampling uses diffusers' flow-matching schedulers (Euler, or Heun as the
higher-order sampler), with the model called on the targets only.
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling

from .errors import FrameMemError

SAMPLERS = ("euler", "heun")


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """The usual flow-matching shift t' = s·t / (1 + (s − 1)·t); shift 1 is identity."""
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(
    shape: tuple[int, ...], mean: float, std: float, shift: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """t ~ L(mean, std), then shifted; returns a float tensor of `shape` in (0, 1)."""
    n = int(torch.tensor(shape).prod())
    u = compute_density_for_timestep_sampling(
        "logit_normal", batch_size=n, logit_mean=mean, logit_std=std, generator=generator
    )
    return shift_timesteps(u.reshape(shape).float(), shift)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for latents (B, C, K, h, w) and per-frame t (B, K)."""
    t = t[:, None, :, None, None].to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def estimate_x0(x_t: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0 = x_t − t·v for per-frame t (B, K)."""
    return x_t - t[:, None, :, None, None].to(x_t.dtype) * velocity


def make_scheduler(sampler: str = "euler", shift: float = 1.0):
    """A diffusers flow-matching scheduler by name: "euler" or "heun" (the higher-order one)."""
    if sampler not in SAMPLERS:
        raise FrameMemError(f"unknown sampler '{sampler}' ({', '.join(SAMPLERS)})")
    cls = FlowMatchEulerDiscreteScheduler if sampler == "euler" else FlowMatchHeunDiscreteScheduler
    return cls(num_train_timesteps=1000, shift=shift)


@torch.no_grad()
def sample(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    scheduler,
    steps: int = 20,
    on_step: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress_bar: Callable | None = None,
) -> torch.Tensor:
    """Integrate from t = 1 (noise) to t = 0 with a diffusers flow-matching scheduler.

    Args:
        velocity_fn: (x_t (B, C, K, h, w), t (B, K)) -> velocity, same shape as x_t.
        noise: (B, C, K, h, w) starting noise.
        scheduler: e.g. `FlowMatchEulerDiscreteScheduler` (its shift is its own config's).
        on_step: (step index, timestep, x) -> x, after every scheduler step (callbacks).
        progress_bar: wraps the timesteps (e.g. a pipeline's `progress_bar`).
    Returns:
        x0 estimate, (B, C, K, h, w).
    """
    if not hasattr(scheduler, "set_timesteps") or not hasattr(scheduler, "step"):
        raise FrameMemError(f"{type(scheduler).__name__} is not a diffusers scheduler")
    scheduler.set_timesteps(steps, device=noise.device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    scale = float(scheduler.config.num_train_timesteps)
    x = noise
    b, _, k = noise.shape[:3]
    timesteps = scheduler.timesteps
    for i, timestep in enumerate(progress_bar(timesteps) if progress_bar else timesteps):
        t = (timestep / scale).float().expand(b, k)
        v = velocity_fn(x, t)
        x = scheduler.step(v, timestep, x, return_dict=False)[0]
        if on_step is not None:
            x = on_step(i, timestep, x)
    return x
