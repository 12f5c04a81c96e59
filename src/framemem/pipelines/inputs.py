"""What the pipelines accept, checked once with the CLI's one-line errors.

Videos: a file path (decoded at the model's fps, resized to cover its frame and centre
cropped, exactly like training data), a uint8 array or tensor (T, H, W, 3), a float array
(T, H, W, 3) in [0, 1] (diffusers' "np" output), a float tensor (3, T, H, W) or
(1, 3, T, H, W) in [-1, 1], or a list of PIL images. Arrays must already have the model's
frame size. Times are seconds.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.storyboard import Storyboard
from ..data.video import load_frames
from ..errors import FrameMemError

SEED_LIMIT = 2**63  # torch.Generator.manual_seed takes a signed 64-bit integer


def video_frames(video, height: int, width: int, fps: float, what: str = "video") -> torch.Tensor:
    """Any accepted video -> uint8 (T, height, width, 3)."""
    if isinstance(video, (str, Path)):
        return load_frames(Path(video), fps, height, width)  # a folder, a missing file: one line of its own
    if isinstance(video, Image.Image):
        raise FrameMemError(f"{what}: one image is not a video (pass it as `image=`, or a list of images)")
    if isinstance(video, (list, tuple)):
        if not video or not all(isinstance(f, Image.Image) for f in video):
            raise FrameMemError(f"{what}: a list must hold PIL images (got {len(video)} items)")
        frames = torch.from_numpy(np.stack([np.asarray(f.convert("RGB")) for f in video]))
    elif isinstance(video, np.ndarray):
        frames = _from_hwc(torch.from_numpy(np.ascontiguousarray(video)), what)
    elif torch.is_tensor(video):
        if video.dtype == torch.uint8:
            frames = _from_hwc(video, what)
        else:
            x = video[0] if video.ndim == 5 and video.shape[0] == 1 else video
            if x.ndim != 4 or x.shape[0] != 3:
                raise FrameMemError(f"{what}: a float tensor must be (3, T, H, W) or (1, 3, T, H, W) in [-1, 1], "
                                    f"not {tuple(video.shape)}")
            frames = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)
    else:
        raise FrameMemError(f"{what}: expected a path, an array, a tensor or a list of PIL images, "
                            f"not {type(video).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise FrameMemError(f"{what}: expected frames (T, H, W, 3), not {tuple(frames.shape)}")
    if tuple(frames.shape[1:3]) != (height, width):
        raise FrameMemError(f"{what}: frames are {frames.shape[2]}x{frames.shape[1]}; this model needs "
                            f"{width}x{height} (a file path is resized for you)")
    return frames.contiguous()


def _from_hwc(x: torch.Tensor, what: str) -> torch.Tensor:
    """(T, H, W, 3) uint8, or float in [0, 1] -> uint8."""
    if x.ndim != 4 or x.shape[-1] != 3:
        raise FrameMemError(f"{what}: an array must be (T, H, W, 3), not {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise FrameMemError(f"{what}: an array must be uint8 or float in [0, 1], not {x.dtype}")
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


def image_frame(image, height: int, width: int) -> torch.Tensor:
    """A start image (PIL, a path, or an array (H, W, 3)) -> uint8 (1, height, width, 3)."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FrameMemError(f"image {path}: no such file")
        try:
            image = Image.open(path).convert("RGB")
        except OSError as err:
            raise FrameMemError(f"image {path}: not a readable image ({err})") from None
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = image if torch.is_tensor(image) else torch.from_numpy(np.array(image))
    if array.ndim != 3:
        raise FrameMemError(f"image: expected one frame (H, W, 3), not {tuple(array.shape)}")
    if array.shape[-1] == 3 and tuple(array.shape[:2]) != (height, width):
        raise FrameMemError(f"image: {array.shape[1]}x{array.shape[0]}; this model starts from {width}x{height} "
                            "images (resize or crop it first)")
    return video_frames(array[None], height, width, 1.0, what="image")


def check_times(times, frames: int, fps: float) -> list[float]:
    """Seconds inside a `frames`-frame video at `fps`, finite, at least one."""
    if isinstance(times, (int, float)):
        times = [times]
    try:
        times = [float(t) for t in times]
    except (TypeError, ValueError):
        raise FrameMemError(f"times: expected seconds, e.g. [1.5, 7.0], not {times!r}") from None
    if not times:
        raise FrameMemError("times: give at least one time in seconds")
    duration = frames / fps
    for t in times:
        if not math.isfinite(t):
            raise FrameMemError(f"time {t}: not a finite number of seconds")
        if not 0 <= t < duration:
            raise FrameMemError(f"time {t:g}s is outside the video (0 to {duration:.2f}s at {fps:g} fps)")
    return times


def as_storyboard(storyboard=None, prompt: str | None = None) -> Storyboard:
    """A Storyboard from a path, a dict ({"prompts": [...]}), a list of (seconds, prompt)
    pairs, a Storyboard, or one prompt for the whole video."""
    if storyboard is not None and prompt is not None:
        raise FrameMemError("give a storyboard or a prompt, not both")
    if storyboard is None:
        if prompt is None:
            raise FrameMemError("give a storyboard (path, dict or list of (seconds, prompt)) or a prompt")
        return Storyboard.from_dict({"prompts": [{"at": 0, "prompt": prompt}]}, "prompt")
    if isinstance(storyboard, Storyboard):
        return storyboard
    if isinstance(storyboard, (str, Path)):
        return Storyboard.load(storyboard)
    if isinstance(storyboard, dict):
        return Storyboard.from_dict(storyboard)
    if isinstance(storyboard, (list, tuple)):
        entries = []
        for n, item in enumerate(storyboard, 1):
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise FrameMemError(f"storyboard: entry {n} must be a (seconds, prompt) pair, not {item!r}")
            entries.append({"at": item[0], "prompt": item[1]})
        return Storyboard.from_dict({"prompts": entries})
    raise FrameMemError(f"storyboard: expected a path, a dict or a list of (seconds, prompt), not {type(storyboard).__name__}")
