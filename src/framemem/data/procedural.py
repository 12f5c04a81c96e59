"""A seeded, deterministic procedural video generator for the embedded default.

Shots are windows into scikit-image's bundled photos with camera pans and zooms,
moving shapes and sprites on top, and hard cuts between shots; some scenes come
back after a cut (with a new camera path), which is what a long memory is for.
Every shot carries a caption of what it shows. No download is needed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

# name -> (skimage.data function, words for captions)
PHOTOS = {
    "astronaut": "an astronaut portrait",
    "coffee": "a cup of coffee",
    "chelsea": "a ginger cat",
    "rocket": "a rocket on its launch pad",
    "hubble_deep_field": "a field of galaxies",
    "immunohistochemistry": "stained tissue under a microscope",
    "retina": "a retina scan",
    "colorwheel": "a colour wheel",
    "brick": "a brick wall",
    "camera": "a photographer with a camera",
    "grass": "a patch of grass",
    "gravel": "gravel",
    "moon": "the surface of the moon",
    "coins": "old coins",
    "clock": "a clock",
    "page": "a page of text",
}
COLOURS = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 80, 230), "yellow": (240, 220, 40),
    "white": (245, 245, 245), "black": (15, 15, 15), "orange": (245, 140, 20), "purple": (150, 50, 200),
}


@dataclass
class Shot:
    """One shot: frames [start, end), the scene it shows and a caption."""

    start: int
    end: int
    scene: str
    caption: str
    returning: bool = False
    objects: list[str] = field(default_factory=list)


@lru_cache(maxsize=None)
def load_photo(name: str, short_side: int) -> Image.Image:
    """A bundled scikit-image photo as RGB, resized to `short_side`; grey ones get a tint."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        tint = np.random.default_rng(sum(map(ord, name))).uniform(0.55, 1.0, size=3)
        image = (image[..., None] * tint).astype(np.uint8)
    image = Image.fromarray(image[..., :3])
    scale = short_side / min(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)


def _camera_box(rng, photo: Image.Image, aspect: float) -> np.ndarray:
    """A random crop (cx, cy, crop height) inside the photo."""
    max_h = min(photo.height, photo.width / aspect)
    h = rng.uniform(0.35, 0.95) * max_h
    w = h * aspect
    return np.array([rng.uniform(w / 2, photo.width - w / 2), rng.uniform(h / 2, photo.height - h / 2), h])


def _describe_motion(start: np.ndarray, end: np.ndarray) -> str:
    dx, dy, dz = end - start
    if abs(dz) > 0.15 * start[2]:
        return "the camera zooms out" if dz > 0 else "the camera zooms in"
    if abs(dx) >= abs(dy) and abs(dx) > 2:
        return "the camera pans right" if dx > 0 else "the camera pans left"
    if abs(dy) > 2:
        return "the camera tilts down" if dy > 0 else "the camera tilts up"
    return "the camera holds still"


def procedural_video(
    seed: int, frames: int, height: int, width: int, fps: float, shot_seconds=(2.0, 6.0), return_prob: float = 0.35
) -> tuple[np.ndarray, list[Shot]]:
    """Render a video.

    Returns:
        frames uint8 (T, height, width, 3) and the list of shots with captions.
    """
    rng = np.random.default_rng(seed)
    names = list(PHOTOS)
    short = 4 * max(height, width)
    aspect = width / height
    out = np.empty((frames, height, width, 3), np.uint8)
    shots: list[Shot] = []
    seen: list[str] = []
    start = 0
    while start < frames:
        length = max(1, int(round(rng.uniform(*shot_seconds) * fps)))
        end = min(frames, start + length)
        last = seen[-1] if seen else None
        earlier = sorted(set(seen) - {last})
        returning = bool(earlier) and rng.random() < return_prob
        pool = earlier if returning else [n for n in names if n != last]
        scene = pool[rng.integers(len(pool))]
        photo = load_photo(scene, short)
        box0, box1 = _camera_box(rng, photo, aspect), _camera_box(rng, photo, aspect)
        box1 = box0 + (box1 - box0) * rng.uniform(0.2, 0.6)  # moderate camera motion
        objects = _make_objects(rng, height, width, short)
        for i in range(start, end):
            a = (i - start) / max(1, end - start - 1)
            cx, cy, h = box0 + (box1 - box0) * a
            w = h * aspect
            frame = photo.resize((width, height), Image.BICUBIC, box=(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            _draw_objects(frame, objects, (i - start) / fps)
            out[i] = np.asarray(frame)
        words = [o["caption"] for o in objects]
        caption = f"{PHOTOS[scene]}, {_describe_motion(box0, box1)}" + "".join(f", {w}" for w in words)
        shots.append(Shot(start, end, scene, caption, returning, words))
        seen.append(scene)
        start = end
    return out, shots


def _make_objects(rng, height: int, width: int, short: int) -> list[dict]:
    objects = []
    for _ in range(int(rng.integers(0, 3))):
        size = rng.uniform(0.12, 0.28) * min(height, width)
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        kind = ["circle", "square", "sprite"][rng.integers(3)]
        obj = dict(
            kind=kind, size=size, colour=COLOURS[colour],
            pos=rng.uniform([0, 0], [width - size, height - size]),
            vel=rng.uniform(-0.5, 0.5, size=2) * np.array([width, height]),  # pixels per second
            bounds=(width - size, height - size),
        )
        if kind == "sprite":
            source = load_photo(list(PHOTOS)[rng.integers(len(PHOTOS))], short)
            x, y = rng.uniform(0, source.width - short / 4), rng.uniform(0, source.height - short / 4)
            obj["image"] = source.resize((int(size), int(size)), Image.BICUBIC, box=(x, y, x + short / 4, y + short / 4))
            obj["caption"] = "a picture tile slides across"
        else:
            obj["caption"] = f"a {colour} {kind} moves"
        objects.append(obj)
    return objects


def _draw_objects(frame: Image.Image, objects: list[dict], seconds: float) -> None:
    draw = ImageDraw.Draw(frame)
    for obj in objects:
        x, y = (_bounce(p + v * seconds, b) for p, v, b in zip(obj["pos"], obj["vel"], obj["bounds"]))
        s = obj["size"]
        if obj["kind"] == "circle":
            draw.ellipse([x, y, x + s, y + s], fill=obj["colour"])
        elif obj["kind"] == "square":
            draw.rectangle([x, y, x + s, y + s], fill=obj["colour"])
        else:
            frame.paste(obj["image"], (int(round(x)), int(round(y))))


def _bounce(p: float, limit: float) -> float:
    """Position reflected into [0, limit]."""
    if limit <= 0:
        return 0.0
    p = abs(p) % (2 * limit)
    return 2 * limit - p if p > limit else p
