"""Stage 2 (paper §3.2, Eq. 4, Fig. 4): a video model with a long memory, section by section.

    L = E || (ε − X0) − G(X_t, t, c, φ(H)) ||²,   t ~ L(0, 1)

H is a history of random length (0 to the preset's seconds, whole memory blocks), X0 the
section right after it, c the caption active at the section (dropped now and then for
classifier-free guidance). Generation samples one section at a time conditioned on the
memory of everything before it, then appends the section to the memory: φ is local in
time, so only the new section is encoded (`MemoryState`), and blocks older than the
preset's history window leave the memory.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import FrameMemError
from ..flow import add_noise, sample, sample_timesteps, velocity_target
from ..models.memory_encoder import MemoryTokens
from ..data.video import to_model

# A causal VAE (Wan) decodes a generated section after this many latent frames of the video
# before it, as its past; a bounded past keeps decoding cost per section, not per video.
DECODE_PAST = 4


def section_latent_frames(model) -> int:
    """Latent frames one section holds: the preset's section length, in whole memory blocks."""
    mc, ar = model.config.model, model.config.ar
    latent = round(ar.section_seconds * mc.fps) // model.codec.temporal_factor
    block = model.encoder.block_frames
    return max(block, latent // block * block)


def window_blocks(model) -> int:
    """Memory blocks the history window keeps (the preset's `seconds` of history)."""
    latent = model.codec.latent_frames(model.config.model.history_frames)
    return max(1, latent // model.encoder.block_frames)


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
        clips = self.clips.to(device) if torch.is_tensor(self.clips) else tuple(c.to(device) for c in self.clips)
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
    lr = None
    if low_res is not None:
        lr = low_res[:, :, : history // model.encoder.block_frames * model.encoder.patch[0]]
    return model.encoder.encode_latents(latents[:, :, :history], lr, model.dit.patch_embedding,
                                        model.config.model.encoder_chunk_blocks)


def ar_loss(model, batch: ARBatch, ar_config, generator: torch.Generator) -> torch.Tensor:
    """One stage-2 flow loss on the section tokens (Eq. 4)."""
    latents, low_res = model.history_latents(batch.clips) if torch.is_tensor(batch.clips) else batch.clips
    h = batch.history
    x0 = latents[:, :, h : h + section_latent_frames(model)]
    b, section = x0.shape[0], x0.shape[2]
    memory = split_memory(model, latents, low_res, h)
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


class MemoryState:
    """The memory of a growing video, kept per block: appending encodes only the new frames.

    `append(latents, low_res)` takes whole memory blocks of latents (B = 1) that follow
    everything appended so far; blocks beyond `max_blocks` (the history window) are dropped.
    Positions stay absolute (RoPE only sees differences).
    """

    def __init__(self, model, max_blocks: int | None = None):
        if not hasattr(model.encoder, "rate_thw"):
            raise FrameMemError("generation needs a memory encoder that is local in time (not the FramePack schedule)")
        self.model, self.max_blocks = model, max_blocks
        self.blocks: list[tuple[torch.Tensor, torch.Tensor]] = []  # (tokens (1, n, D), positions (n, 3))
        self.latent_frames = 0  # latent frames appended so far (dropped ones included)

    def append(self, latents: torch.Tensor, low_res: torch.Tensor | None) -> None:
        encoder = self.model.encoder
        if latents.shape[2] % encoder.block_frames:
            raise FrameMemError(f"append {latents.shape[2]} latent frames: need whole blocks of {encoder.block_frames}")
        memory = encoder.encode_latents(latents, low_res, self.model.dit.patch_embedding,
                                        self.model.config.model.encoder_chunk_blocks)
        tm = memory.grid[0]
        tokens = memory.tokens.unflatten(1, (tm, -1))
        positions = memory.positions.unflatten(0, (tm, -1)).clone()
        positions[..., 0] += self.latent_frames / encoder.patch[0]
        self.blocks += [(tokens[:, i], positions[i]) for i in range(tm)]
        if self.max_blocks is not None:
            self.blocks = self.blocks[-self.max_blocks :]
        self.latent_frames += latents.shape[2]

    def memory(self) -> MemoryTokens | None:
        if not self.blocks:
            return None
        return MemoryTokens(torch.cat([b[0] for b in self.blocks], 1), torch.cat([b[1] for b in self.blocks]), None)


@torch.no_grad()
def sample_section(model, memory: MemoryTokens | None, offset: int, text: torch.Tensor, noise: torch.Tensor,
                   steps: int, cfg: float, progress: bool = False) -> torch.Tensor:
    """Sample one section (1, C, S, h, w) at latent frames offset…offset+S−1, given the memory
    and text (2, L, text_dim): the prompt's and the empty one's (classifier-free guidance)."""
    section = noise.shape[2]
    frames = (offset + torch.arange(section, device=noise.device)).float()[None].expand(2, -1)
    if memory is not None:
        memory = dataclasses.replace(memory, tokens=memory.tokens.expand(2, -1, -1))

    def velocity(x, t):
        v = model.dit(x.expand(2, -1, -1, -1, -1), frames, t.expand(2, -1), memory, text)
        cond, uncond = v.chunk(2)
        return uncond + cfg * (cond - uncond)

    return sample(velocity, noise, steps=steps, shift=model.config.ar.t_shift, progress=progress)


@torch.no_grad()
def generate(model, storyboard, seconds: float, init_video: torch.Tensor | None = None, cfg: float | None = None,
             seed: int = 0, steps: int | None = None, progress: bool = True) -> tuple[torch.Tensor, list[dict]]:
    """Generate `seconds` of video after `init_video` (pixels (1, 3, T, H, W) in [-1, 1]).

    Returns:
        the whole video (1, 3, T', H, W) in [-1, 1] (init video first) and one record per
        section (start time, prompt, memory tokens it saw).
    """
    if not math.isfinite(seconds) or seconds <= 0:
        raise FrameMemError(f"--seconds must be a positive number (got {seconds:g})")
    mc, ar, codec = model.config.model, model.config.ar, model.codec
    cfg = ar.cfg if cfg is None else cfg
    steps = steps or ar.sample_steps
    section = section_latent_frames(model)
    state = MemoryState(model, window_blocks(model))
    pieces, records = [], []
    past = None  # the latent frames a causal decoder reads each new section after
    device = next(model.parameters()).device
    if init_video is not None:
        init_video = init_video.to(device)
        whole = codec.latent_frames(init_video.shape[2]) // model.encoder.block_frames * model.encoder.block_frames
        if whole == 0:
            raise FrameMemError("the init video is shorter than one memory block")
        init_video = init_video[:, :, : codec.pixel_frames(whole)]
        latents, low_res = model.history_latents(init_video)
        state.append(latents, low_res)
        pieces.append(init_video)
        past = latents[:, :, -DECODE_PAST:]
    generator = torch.Generator().manual_seed(seed)
    h, w = codec.latent_shape(1, mc.height, mc.width)[1:]
    wanted = max(1, int(round(seconds * mc.fps)))  # new pixel frames
    per_section = section * codec.temporal_factor  # a causal codec's first section has 1 + tf·(S−1)
    first = codec.pixel_frames(section) if past is None else per_section
    count = 1 + max(0, -(-(wanted - first) // per_section))
    for _ in tqdm(range(count), desc="sections", disable=not progress):
        start = state.latent_frames * codec.temporal_factor / mc.fps
        prompt = storyboard.prompt_at(start + ar.section_seconds / 2)
        memory = state.memory()
        noise = torch.randn((1, codec.channels, section, h, w), generator=generator).to(device)
        x0 = sample_section(model, memory, state.latent_frames, model.text_encoder([prompt, ""]), noise, steps, cfg,
                            progress)
        pixels = codec.decode_after(x0, past).clamp(-1, 1)
        past = (x0 if past is None else torch.cat([past, x0], dim=2))[:, :, -DECODE_PAST:]
        pieces.append(pixels)
        state.append(x0, section_low_res(model, pieces, x0.shape[2]))
        records.append({"start_seconds": round(start, 3), "prompt": prompt,
                        "memory_tokens": 0 if memory is None else memory.tokens.shape[1]})
    kept = (0 if init_video is None else init_video.shape[2]) + wanted  # the last section may overshoot
    return torch.cat(pieces, dim=2)[:, :, :kept].cpu(), records


def section_low_res(model, pieces: list[torch.Tensor], section: int) -> torch.Tensor | None:
    """The LR-branch input of the last `section` latent frames of the video whose pixels are
    `pieces` (in order), as encoding the whole video gives it. A causal codec groups frames
    from the video's start (frame 0 alone, then blocks), so its LR latents are taken from the
    whole video's; otherwise the section's own pixels are enough."""
    codec, encoder = model.codec, model.encoder
    if not codec.causal:
        return encoder.low_res_latents(pieces[-1], codec, codec.latent_shape(pieces[-1].shape[2], *pieces[-1].shape[3:]))
    video = torch.cat(pieces, dim=2)
    low_res = encoder.low_res_latents(video, codec, codec.latent_shape(video.shape[2], *video.shape[3:]))
    return None if low_res is None else low_res[:, :, -(section // encoder.rate_thw[0] * encoder.patch[0]):]


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
        memory = split_memory(model, latents, low_res, h)
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
             cache=None):
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
    from .trainer import Trainer, latest_checkpoint
    from ..data.video import VideoDataset

    run_dir = Path(run_dir)
    if not resume and latest_checkpoint(run_dir) is not None:
        raise FrameMemError(f"{run_dir} already holds checkpoints: pass --resume, or choose a new folder")
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
                                             fresh_memory, dit.patch_embedding)
    model.encoder.requires_grad_(ar.train_memory or bool(fresh_memory))
    if config.model.lora_rank:  # keep training the stage-1 LoRA
        dit.transformer.requires_grad_(False)
        for name, p in dit.transformer.named_parameters():
            p.requires_grad_("lora_" in name)
    else:
        dit.add_lora(ar.lora_rank)
    model.text_encoder = build_text_encoder(ar, dit.text_dim, config.model.transformer_path)
    model.train()

    mc, tc = config.model, config.train
    dataset = VideoDataset(data, mc.fps, mc.height, mc.width, min_frames=int(mc.fps)) if data is not None else None
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
