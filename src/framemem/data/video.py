"""Video files in and out (PyAV), fps resampling, resize/crop, and a dataset of files.

Frames are uint8 tensors (T, H, W, 3); models take float (B, 3, T, H, W) in [-1, 1].
"""
from __future__ import annotations

import json
import re
import logging
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from ..errors import FrameMemError
from ..files import atomic_path

log = logging.getLogger("framemem")
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
MIN_VIDEO_SECONDS = 1.0  # shorter videos are skipped by the datasets and the cache alike


def to_model(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) or (B, T, H, W, 3) -> float (B, 3, T, H, W) in [-1, 1]."""
    if frames.ndim == 4:
        frames = frames[None]
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """float (3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)


def resize_cover(image: Image.Image, height: int, width: int) -> Image.Image:
    """Resize so the image covers height x width (aspect kept); the crop happens later."""
    scale = max(height / image.height, width / image.width)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    return image.resize(size, Image.BICUBIC, reducing_gap=3.0)


def center_crop(frames: np.ndarray, height: int, width: int, offset: tuple[float, float] = (0.5, 0.5)):
    """Crop (T, H', W', 3) to (T, height, width); `offset` in [0, 1] picks the window."""
    _, h, w, _ = frames.shape
    top = int(round((h - height) * offset[0]))
    left = int(round((w - width) * offset[1]))
    return frames[:, top : top + height, left : left + width]


def read_video(path: str | Path, fps: float, height: int, width: int, max_frames: int | None = None) -> np.ndarray:
    """Decode a file, resample it to `fps` (nearest earlier frame) and resize it to cover
    height x width. Returns uint8 (T, H', W', 3) with H' >= height, W' >= width (not cropped).
    Raises FrameMemError when the file is missing or not a decodable video."""
    path = Path(path)
    if path.is_dir():
        raise FrameMemError(f"{path}: is a folder, not a video file")
    if not path.is_file():
        raise FrameMemError(f"{path}: no such file")
    frames: list[np.ndarray] = []
    decoded, declared, damage = 0, None, []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FrameMemError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            declared = stream.frames or None  # what the header promises (0: not stated)
            next_time = 0.0
            for frame in _decode_until_damage(container, stream, damage):
                decoded += 1
                if frame.pts is None or frame.time_base is None:
                    time = next_time
                else:
                    time = float(frame.pts * frame.time_base)
                    if stream.start_time is not None:
                        time -= float(stream.start_time * stream.time_base)
                while time + 1e-6 >= next_time:
                    if max_frames is not None and len(frames) >= max_frames:
                        break
                    frames.append(np.asarray(resize_cover(frame.to_image(), height, width)))
                    next_time = len(frames) / fps
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except FrameMemError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise FrameMemError(f"{path}: not a readable video ({type(err).__name__}: {err})") from None
    if not frames:
        raise FrameMemError(f"{path}: no frames could be decoded")
    stopped_early = max_frames is not None and len(frames) >= max_frames
    if not stopped_early and (damage or (declared and decoded < declared - 1)):
        log.warning("framemem: warning: %s looks truncated: %s of its %s frames decoded%s; using the %.1f s that "
                    "could be read", path, decoded, declared or "?", f" ({damage[0]})" if damage else "",
                    len(frames) / fps)
    return np.stack(frames)


def _decode_until_damage(container, stream, damage: list):
    """Frames of `stream` until the file ends or turns out damaged (a truncated download):
    the frames before the damage are kept, and what stopped it is appended to `damage`."""
    iterator = container.decode(stream)
    while True:
        try:
            frame = next(iterator)
        except StopIteration:
            return
        except av.error.InvalidDataError as err:
            damage.append(f"{type(err).__name__}: {err}")
            return
        yield frame


def video_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of a file's first video stream, without decoding it."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FrameMemError(f"{path}: no video stream")
            context = container.streams.video[0].codec_context
            if not context.height or not context.width:
                raise FrameMemError(f"{path}: video stream has no frame size")
            return context.height, context.width
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise FrameMemError(f"{path}: not a readable video ({type(err).__name__}: {err})") from None


def video_fps(path: str | Path) -> float:
    """Average frame rate of a file's first video stream."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video or not container.streams.video[0].average_rate:
                raise FrameMemError(f"{path}: no video stream with a frame rate")
            return float(container.streams.video[0].average_rate)
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise FrameMemError(f"{path}: not a readable video ({type(err).__name__}: {err})") from None


def load_frames(path: str | Path, fps: float, height: int, width: int) -> torch.Tensor:
    """A whole video, preprocessed exactly like training data: uint8 (T, height, width, 3)."""
    return torch.from_numpy(np.ascontiguousarray(center_crop(read_video(path, fps, height, width), height, width)))


class VideoWriter:
    """Write uint8 frames (T, H, W, 3) to a video as they come, H.264 when available (else
    MPEG-4). With `streaming`, the file is a fragmented MP4 with a keyframe each second, so
    what was written plays even if the process is killed before `close`."""

    def __init__(self, path: str | Path, fps: float, height: int, width: int, streaming: bool = False):
        options = {}
        if streaming:  # a fragment per keyframe, each on disk as soon as it is complete
            options = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
        self.container = av.open(str(path), mode="w", options=options)
        rate = Fraction(fps).limit_denominator(1000)
        x264 = {"crf": "12", **({"tune": "zerolatency"} if streaming else {})}  # no lookahead: frames leave at once
        try:
            self.stream = self.container.add_stream("libx264", rate=rate, options=x264)
        except (av.error.FFmpegError, ValueError):
            self.stream = self.container.add_stream("mpeg4", rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        if streaming:
            self.stream.gop_size = max(1, round(fps))
        self.frames = 0

    def write(self, frames) -> None:
        for image in np.asarray(frames):
            for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                self.container.mux(packet)
            self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def write_video(path: str | Path, frames: torch.Tensor | np.ndarray, fps: float) -> None:
    """Write uint8 (T, H, W, 3) to an mp4 (H.264 when available, else MPEG-4), atomically."""
    frames = np.asarray(frames)
    with atomic_path(path) as tmp:
        writer = VideoWriter(tmp, fps, frames.shape[1], frames.shape[2])
        writer.write(frames)
        writer.close()


def caption_of(path: str | Path) -> str | None:
    """A video's caption: the text of its sidecar file (`clip.mp4` -> `clip.txt`), if any."""
    sidecar = Path(path).with_suffix(".txt")
    return sidecar.read_text().strip() if sidecar.is_file() else None


def mirror_caption(caption: str) -> str:
    """The caption of the horizontally flipped video: left and right swap."""
    return re.sub(r"\b(left|right)\b", lambda m: "right" if m.group(1) == "left" else "left", caption)


def list_videos(source: str | Path) -> list[Path]:
    """Video files of a folder (recursive; hidden files skipped: macOS `._*` sidecars, the
    temporaries of an interrupted write), or the `path` entries of a JSONL manifest."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))
    if source.suffix == ".jsonl" and source.is_file():
        paths = []
        for n, line in enumerate(source.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                paths.append((source.parent / entry["path"]).resolve())
            except (json.JSONDecodeError, KeyError, TypeError):
                raise FrameMemError(f"{source}:{n}: each line must be a JSON object with a 'path'") from None
        return paths
    raise FrameMemError(f"{source}: not a folder of videos nor a .jsonl manifest")


def _is_collection(source) -> bool:
    source = Path(source)
    return source.is_dir() or source.suffix == ".jsonl"


class VideoDataset:
    """Random clips from video files, decoded at the preset's fps and resolution.

    A file that is unreadable, corrupt or shorter than `min_frames` is skipped with one
    log line and counted in `skipped`; it never stops a run. Decoded videos are kept in
    an LRU cache of `cache_size` entries.
    """

    def __init__(self, source, fps: float, height: int, width: int, min_frames: int, cache_size: int = 64):
        self.fps, self.height, self.width, self.min_frames = fps, height, width, min_frames
        sources = source if isinstance(source, (list, tuple)) else [source]
        self.files = [f for s in sources for f in (list_videos(s) if _is_collection(s) else [Path(s)])]
        self.skipped: dict[str, str] = {}
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self.cache_size = cache_size
        self.usable = [p for p in self.files if self._probe(p)]
        log.info("dataset: %s", self.summary())
        if not self.usable:  # training on nothing but the procedural generator would be a silent surprise
            first = next(iter(self.skipped.items()), None)
            raise FrameMemError(f"no usable video in {', '.join(map(str, sources))}"
                                + (f" ({len(self.skipped)} skipped; {Path(first[0]).name}: {first[1]})" if first else ""))

    def summary(self) -> str:
        return f"{len(self.usable)} usable videos, {len(self.skipped)} skipped"

    def _skip(self, path: Path, why: str) -> None:
        self.skipped[str(path)] = why
        log.warning("skipping %s: %s", path, why)

    def _probe(self, path: Path) -> bool:
        try:
            frames = self._frames(path)
        except FrameMemError as err:
            self._skip(path, str(err).split(": ", 1)[-1])
            return False
        if len(frames) < self.min_frames:
            self._skip(path, f"too short ({len(frames)} frames < {self.min_frames})")
            self._cache.pop(path, None)
            return False
        return True

    def _frames(self, path: Path) -> np.ndarray:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        frames = read_video(path, self.fps, self.height, self.width)
        self._cache[path] = frames
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return frames

    def __len__(self) -> int:
        return len(self.usable)

    def sample_clip(self, rng: np.random.Generator, frames: int, video: int | None = None) -> tuple[torch.Tensor, str]:
        """A random window of up to `frames` frames: uint8 (T <= frames, height, width, 3),
        with a random crop position and horizontal flip, and its video's caption (`caption_of`,
        mirrored with the flip; "" without one)."""
        if not self.usable:
            raise FrameMemError("dataset has no usable video")
        path = self.usable[rng.integers(len(self.usable)) if video is None else video]
        data = self._frames(path)
        length = min(frames, len(data))
        start = int(rng.integers(0, len(data) - length + 1))
        clip = center_crop(data[start : start + length], self.height, self.width, tuple(rng.random(2)))
        caption = caption_of(path) or ""
        if rng.random() < 0.5:
            clip, caption = clip[:, :, ::-1], mirror_caption(caption)
        return torch.from_numpy(np.ascontiguousarray(clip)), caption
