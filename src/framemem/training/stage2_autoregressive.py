"""Stage 2 (paper §3.2, Eq. 4, Fig. 4): fine-tuning a video model with a long memory.

    L = E || (ε − X0) − G(X_t, t, c, φ(H)) ||²,   t ~ L(0, 1)

H is a history of random length (0 to the preset's seconds, whole memory blocks), X0 the
section right after it, c the caption active at the section (dropped now and then for
classifier-free guidance). Generation with the trained model is `FrameMemPipeline`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FrameMemError
from ..flow import add_noise, sample_timesteps, velocity_target
from ..models.framemem import section_latent_frames, window_blocks
from ..models.memory_encoder import MemoryTokens
from ..pipelines.memory_state import DECODE_PAST
from ..data.video import to_model
from ..data.cache import to_device


@dataclass
class ARBatch:
    """One stage-2 batch: clips of history + section, as pixels (B, 3, T, H, W) or cached
    (latents, low_res); `history` is the latent frames of H (whole blocks, 0 = none)."""

    clips: torch.Tensor | tuple
    prompts: list[str]
    history: int
    text: torch.Tensor | None = None  # cached prompt embeddings (B, L, D) and the empty one's (L, D)
    null_text: torch.Tensor | None = None

    def to(self, device) -> "ARBatch":
        clips = to_device(self.clips, device)
        text, null = (None, None) if self.text is None else (self.text.to(device), self.null_text.to(device))
        return ARBatch(clips, self.prompts, self.history, text, null)


def draw_batch(sampler, model, rng: np.random.Generator, size: int) -> ARBatch:
    """Stage-2 clips from a `HistorySampler` (rendering ≥ window + section) or a cache
    (`CachedHistories`): a history length in whole blocks from 0 to the window, then the
    section, with the section's caption (a cached video's own caption)."""
    codec, block, section = model.codec, model.encoder.block_frames, section_latent_frames(model)
    history = int(rng.integers(0, window_blocks(model) + 1)) * block
    if hasattr(sampler, "captioned_batch"):
        latents, low_res, captions, text = sampler.captioned_batch(rng, size, history + section)
        history = max(0, latents.shape[2] - section) // block * block  # short videos: shorter windows
        return ARBatch((latents, low_res), captions, history, text, sampler.null_text)
    frames = codec.pixel_frames(history + section)
    pairs = [sampler.sample_with_caption(rng, frames, caption_at=section_middle(codec, history, section))
             for _ in range(size)]
    return ARBatch(to_model(torch.stack([p[0] for p in pairs])), [p[1] for p in pairs], history)


def section_middle(codec, history: int, section: int) -> int:
    """The pixel frame whose caption is the section's: the middle of the `section` latent
    frames that follow `history` latent frames."""
    frames = codec.pixel_frames(history + section)
    start = codec.pixel_frames(history) if history else 0
    return min(start + (frames - start) // 2, frames - 1)


def split_memory(model, latents: torch.Tensor, low_res: torch.Tensor | None, history: int) -> MemoryTokens | None:
    """φ of the first `history` latent frames of a clip's (latents, low_res)."""
    if history == 0:
        return None
    lr = model.encoder.low_res_span(low_res, 0, history)
    return model.encoder.encode_latents(latents[:, :, :history], lr, model.dit.patch_embedding,
                                        model.config.model.encoder_chunk_blocks)


def ar_loss(model, batch: ARBatch, ar_config, generator: torch.Generator) -> torch.Tensor:
    """One stage-2 flow loss on the section tokens (Eq. 4)."""
    latents, low_res = model.history_latents(batch.clips) if torch.is_tensor(batch.clips) else batch.clips
    h = batch.history
    x0 = latents[:, :, h : h + section_latent_frames(model)]
    b, section = x0.shape[0], x0.shape[2]
    memory = model.context(split_memory(model, latents, low_res, h), latents[:, :, :h], h)
    if memory is not None and torch.rand((), generator=generator).item() < ar_config.memory_dropout:
        memory = None
    keep = torch.rand(b, generator=generator) >= ar_config.text_dropout
    if batch.text is not None:
        text = torch.where(keep.to(batch.text.device)[:, None, None], batch.text, batch.null_text[None])
    else:
        text = model.text_encoder([p if k else "" for p, k in zip(batch.prompts, keep.tolist())])
    t = sample_timesteps((b,), ar_config.t_mean, ar_config.t_std, ar_config.t_shift, generator)
    t = t[:, None].expand(b, section).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    frames = (h + torch.arange(section, device=x0.device)).float()[None].expand(b, -1)
    v = model.dit(add_noise(x0, noise, t), frames, t, memory, text)
    return F.mse_loss(v.float(), velocity_target(x0, noise).float())


@torch.no_grad()
def ar_diagnostics(model, clips: list[torch.Tensor], prompts: list[str], seed: int = 0) -> dict:
    """Held-out stage-2 signals on clips (1, 3, T, H, W) of a full window + one section.

    one_step_psnr: PSNR of the section's x0 estimate from pure noise (t = 1) given memory
        and prompt; loss_t1 / loss_t1_no_memory: the flow loss there with and without the
        memory; memory_gap = no_memory − with (> 0: the memory helps predict the section).
    """
    from ..flow import estimate_x0
    from ..metrics import psnr

    generator = torch.Generator().manual_seed(seed)
    section = section_latent_frames(model)
    psnrs, with_memory, without = [], [], []
    for clip, prompt in zip(clips, prompts):
        latents, low_res = model.history_latents(clip)
        h = latents.shape[2] - section
        x0 = latents[:, :, h:]
        memory = model.context(split_memory(model, latents, low_res, h), latents[:, :, :h], h)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        t = torch.ones(1, section, device=x0.device)
        frames = (h + torch.arange(section, device=x0.device)).float()[None]
        text = model.text_encoder([prompt])
        v = model.dit(noise, frames, t, memory, text)
        v_none = model.dit(noise, frames, t, None, text)
        target = velocity_target(x0, noise)
        with_memory.append(F.mse_loss(v, target).item())
        without.append(F.mse_loss(v_none, target).item())
        estimate = model.codec.decode_after(estimate_x0(noise, v, t), latents[:, :, max(0, h - DECODE_PAST) : h])
        psnrs.append(psnr(estimate, clip[:, :, -estimate.shape[2]:]))
    result = {"one_step_psnr": float(np.mean(psnrs)), "loss_t1": float(np.mean(with_memory)),
              "loss_t1_no_memory": float(np.mean(without))}
    result["memory_gap"] = result["loss_t1_no_memory"] - result["loss_t1"]
    return result


def heldout_clips(model, count: int = 2) -> tuple[list[torch.Tensor], list[str]]:
    """`count` never-trained procedural clips of a full history window + one section, and
    the captions of their sections."""
    from ..data.histories import HELDOUT_SEED_BASE, HistorySampler

    mc, codec = model.config.model, model.codec
    history, section = window_blocks(model) * model.encoder.block_frames, section_latent_frames(model)
    sampler = HistorySampler(mc, render_frames=codec.pixel_frames(history + section))
    middle = section_middle(codec, history, section)  # where training takes a section's caption
    clips, prompts = [], []
    for i in range(count):
        video, shots = sampler.render(HELDOUT_SEED_BASE + 100 + i)
        clips.append(to_model(video[None]))
        prompts.append(next(s.caption for s in shots if s.start <= middle < s.end))
    return clips, prompts


def finetune(config, memory_checkpoint, run_dir, data=None, resume: bool = False, max_minutes: float | None = None,
             export_dtype: torch.dtype | None = None, fresh_memory: str | None = None, window_seconds: float | None = None,
             cache=None, accept_changes: bool = False):
    """Stage 2: fine-tune a stage-1 checkpoint (`memory_checkpoint`) into an autoregressive
    model; `config` supplies `ar` and `train`, the checkpoint the model numbers.

    Baselines: `fresh_memory` (a variant name) replaces φ by a new one trained here, at
    `config.model.rate` ("Without Pretrain"; the DiT's patchifier at rate 1×1×1 with a short
    `window_seconds` is a sliding window of full-resolution frames). `cache`: a `framemem
    cache` folder to train from (latents and captions) instead of rendering / decoding.
    Returns the trainer after exporting `run_dir/model`."""
    from pathlib import Path

    from ..data.histories import HistorySampler
    from ..models.framemem import FrameMem, build_memory_encoder
    from ..models.text_encoders import build_text_encoder
    from .checkpoints import prepare_run_folder
    from .trainer import Trainer
    from ..data.video import MIN_VIDEO_SECONDS, VideoDataset

    run_dir = Path(run_dir)
    prepare_run_folder(config, run_dir, resume, accept_changes)
    model = FrameMem.from_pretrained(memory_checkpoint)
    if model.config.preset != config.preset:
        raise FrameMemError(f"{memory_checkpoint}: a stage-1 checkpoint of preset '{model.config.preset}', "
                            f"not '{config.preset}'")
    rate = config.model.rate
    config.model, config.stage = model.config.model, 2
    model.config = config
    torch.manual_seed(config.train.seed)
    ar, dit = config.ar, model.dit
    if fresh_memory:
        config.model.rate = rate
        config.model.seconds = window_seconds or config.model.seconds
        model.encoder = build_memory_encoder(config.model, model.codec.channels, dit.inner_dim, dit.patch_size,
                                             fresh_memory, dit.patch_embedding, dit_layers=len(dit.transformer.blocks))
    model.check_window()  # after a fresh φ's window_seconds
    model.encoder.requires_grad_(ar.train_memory or bool(fresh_memory))
    if getattr(model.encoder, "has_features", False):  # the DiT's side of the cross-attention trains with it
        model.encoder.feature_attention.requires_grad_(True)
    if config.model.lora_rank:  # keep training the stage-1 LoRA
        dit.transformer.requires_grad_(False)
        for name, p in dit.transformer.named_parameters():
            p.requires_grad_("lora_" in name)
    else:
        dit.add_lora(ar.lora_rank)
    model.text_encoder = build_text_encoder(ar, dit.text_dim, config.model.transformer_path)
    model.train()

    mc, tc = config.model, config.train
    dataset = VideoDataset(data, mc.fps, mc.height, mc.width, min_frames=int(mc.fps * MIN_VIDEO_SECONDS)) if data is not None else None
    render = model.codec.pixel_frames(window_blocks(model) * model.encoder.block_frames + section_latent_frames(model))
    sampler = HistorySampler(mc, dataset, tc.procedural_fraction, tc.procedural_pool, render_frames=render)
    if cache is not None:
        from ..data.cache import CachedHistories

        sampler = CachedHistories(cache, config, model.encoder.block_frames)
    clips, prompts = heldout_clips(model)

    def objective(m, batch, generator):
        return ar_loss(m, batch.to(next(m.parameters()).device), ar, generator)

    def evaluate(m):
        device = next(m.parameters()).device
        return ar_diagnostics(m, [c.to(device) for c in clips], prompts)

    trainer = Trainer(config, run_dir, model, objective, lambda rng: draw_batch(sampler, model, rng, tc.batch_size),
                      evaluate, stage="finetune", find_unused_parameters=ar.train_memory or bool(fresh_memory))
    return trainer.fit(resume, max_minutes, export_dtype)
