"""Stage 0, for a DiT that starts from scratch (`tiny`): plain video denoising.

The paper's stage 1 starts from a pretrained video DiT (Wan), which already turns its own
patch embeddings into frames. `tiny` has no such weights, so `framemem base` first trains its
DiT on plain flow matching of short clips — every latent frame with its own t, so nearly
clean frames serve as context for noisier ones; no memory, no text — and
`framemem pretrain --model-path RUN/model` starts stage 1 from it, as the Wan presets start
from Wan's weights (docs/reports/training.md, "A base DiT").

    L = E ‖(ε − X0) − G(X_t, t)‖²,   t ~ L(ar.t_mean, ar.t_std) per frame
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import FrameMemConfig
from ..errors import FrameMemError
from ..flow import add_noise, sample_timesteps, velocity_target

BASE_STEPS = 2000  # what docs/reports/training.md measured
BASE_CLIP_SECONDS = 2.0


def denoising_loss(model, video: torch.Tensor, config: FrameMemConfig, generator: torch.Generator) -> torch.Tensor:
    """Flow loss of plain video denoising on clips (B, 3, T, H, W) in [-1, 1]: one t per
    latent frame from stage 2's distribution (`ar.t_*`), no memory, empty text."""
    x0 = model.codec.encode(video)
    b, frames = x0.shape[0], x0.shape[2]
    ar = config.ar
    t = sample_timesteps((b, frames), ar.t_mean, ar.t_std, ar.t_shift, generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    positions = torch.arange(frames, device=x0.device).float()[None].expand(b, -1)
    v = model.dit(add_noise(x0, noise, t), positions, t, None)
    return F.mse_loss(v.float(), velocity_target(x0, noise).float())


def base_pretrain(config: FrameMemConfig, run_dir: str | Path, data=None, resume: bool = False,
                  max_minutes: float | None = None, export_dtype: torch.dtype | None = None,
                  clip_seconds: float = BASE_CLIP_SECONDS, accept_changes: bool = False):
    """Stage 0: train the preset's DiT on plain denoising of `clip_seconds` clips from the
    procedural generator mixed with the videos of `data`; exports `run_dir/model` (its
    `transformer/` is what `--model-path` loads) and returns the trainer."""
    from .trainer import Trainer, build_run_model, history_sampler

    if config.model.transformer_path:
        raise FrameMemError(f"preset '{config.preset}' loads its DiT from {config.model.transformer_path}: "
                            "a base DiT is for presets trained from scratch")
    config = dataclasses.replace(config, stage=0)
    model = build_run_model(config, run_dir, resume, "only_lr", accept_changes)  # φ is unused: only the DiT trains
    sampler = history_sampler(config, data)
    frames = max(1, int(round(clip_seconds * config.model.fps)))

    def make_batch(rng):
        return sampler.batch(rng, config.train.batch_size, frames)

    def objective(m, video, generator):
        return denoising_loss(m, video.to(next(m.parameters()).device), config, generator)

    trainer = Trainer(config, run_dir, model, objective, make_batch, None, stage="base")
    return trainer.fit(resume, max_minutes, export_dtype)
