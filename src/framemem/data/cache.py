"""`framemem cache`: run the codec once over a video collection, train from latents after.

For every video: decode at the preset's fps, resize to cover and centre-crop to its
aspect bucket (the preset's frame for landscape sources, the same frame turned on its
side for portrait ones, like the paper's Shorts), then store the full-resolution latents
and the low-resolution latents of φ's LR branch. Captions from a sidecar `.txt` are kept
in the manifest; with a frozen text encoder (Wan's umT5) their embeddings are cached too.

Layout:
    CACHE/manifest.json          preset, the numbers the latents depend on, buckets, videos
    CACHE/shards/*.safetensors   "{id}/latents" (C, T', H', W'), "{id}/low_res" (C, T'', h, w)
                                 (several memory encoders: "{id}/low_res.1", ... for the next rates),
                                 "{id}/text" (L', D) bf16 without padding (umT5 presets)
    CACHE/null_text.safetensors  the empty prompt's embedding (classifier-free guidance)
    CACHE/progress/rank-R.jsonl  one line per finished (or skipped) video: resumable

Under `accelerate launch` / `torchrun`, each process takes the unfinished videos
`[rank::world]`: none twice, none missed; rank 0 writes the manifest at the end.
A shard is renamed into place before its videos are marked done, so a kill loses
at most the shard being filled.
"""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..config import FrameMemConfig
from ..errors import FrameMemError
from ..files import atomic_path, read_jsonl, write_json, write_text

log = logging.getLogger("framemem")
MANIFEST = "manifest.json"
NULL_TEXT = "null_text.safetensors"


def cache_key(config: FrameMemConfig) -> dict:
    """The preset numbers that decide the cached tensors; a cache only serves a config
    with the same key."""
    mc = config.model
    return {"codec": mc.codec, "codec_factor": mc.codec_factor, "codec_temporal_factor": mc.codec_temporal_factor,
            "codec_channels": mc.codec_channels, "codec_scale": mc.codec_scale,
            "fps": mc.fps, "height": mc.height, "width": mc.width, "rate": json.loads(json.dumps(mc.rate)),
            "patch_size": list(mc.transformer.get("patch_size", (1, 2, 2))),
            "text_encoder": config.ar.text_encoder if config.ar.text_encoder == "umt5" else None}


def buckets(config: FrameMemConfig) -> dict[str, tuple[int, int]]:
    """Aspect buckets {name: (height, width)}: the preset's frame and its portrait twin."""
    h, w = config.model.height, config.model.width
    return {f"{h}x{w}": (h, w)} if h == w else {"landscape": (min(h, w), max(h, w)), "portrait": (max(h, w), min(h, w))}


def pick_bucket(size: tuple[int, int], choices: dict[str, tuple[int, int]]) -> str:
    """The bucket whose aspect ratio is nearest (in log ratio) to a source of (height, width)."""
    aspect = np.log(size[0] / size[1])
    return min(choices, key=lambda name: abs(np.log(choices[name][0] / choices[name][1]) - aspect))


def _trim(text: torch.Tensor) -> torch.Tensor:
    """(1, L, D) embeddings without their zero padding, in bf16 (what the cache stores)."""
    keep = max(1, int((text[0].abs().sum(-1) > 0).sum()))
    return text[:, :keep].to(torch.bfloat16)


def video_id(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]


def _done(out: Path) -> dict[str, dict]:
    """Every finished or skipped video recorded by any rank, by source path."""
    records = {}
    for part in sorted((out / "progress").glob("rank-*.jsonl")):
        for entry in read_jsonl(part):  # a line torn by a kill is left out: that video is redone
            records[entry["source"]] = entry
    return records


def lr_geometry(config: FrameMemConfig, channels: int):
    """φ's geometry for the LR inputs (an `only_lr` φ: no weights), one per memory encoder."""
    import dataclasses

    from ..models.framemem import build_memory_encoder

    plain = dataclasses.replace(config.model, cross_attention=False)  # the LR inputs do not depend on it
    return build_memory_encoder(plain, channels, 1, plain.transformer.get("patch_size", (1, 2, 2)), "only_lr")


def as_parts(low_res) -> tuple:
    """One φ's LR input (a tensor) or several encoders' (a tuple), as a tuple."""
    return low_res if isinstance(low_res, tuple) else (low_res,)


def to_device(batch, device):
    """Pixels (a tensor) or a cached history (latents, low_res), low_res a tensor, a tuple of
    them (several memory encoders) or None, moved to `device`."""
    if batch is None or torch.is_tensor(batch):
        return None if batch is None else batch.to(device)
    return tuple(to_device(part, device) for part in batch)


def low_res_names(vid: str, count: int) -> list[str]:
    """Keys of a video's LR inputs: `low_res`, then `low_res.1`, ... for more memory encoders."""
    return [f"{vid}/low_res" + (f".{i}" if i else "") for i in range(count)]


def check_cache(path: str | Path, config: FrameMemConfig) -> dict:
    """The manifest of a finished cache, after checking it was written for `config`."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise FrameMemError(f"{path}: not a finished framemem cache (no {MANIFEST}); run `framemem cache` first")
    manifest = json.loads((path / MANIFEST).read_text())
    key = cache_key(config)
    if manifest["key"] != key:
        diff = ", ".join(f"{k} {manifest['key'].get(k)} != {v}" for k, v in key.items() if manifest["key"].get(k) != v)
        raise FrameMemError(f"{path}: cache was written for preset '{manifest['preset']}', not this one ({diff})")
    return manifest


def build_cache(config: FrameMemConfig, source, out: str | Path, max_seconds: float | None = None,
                shard_videos: int = 16, device: str | None = None) -> dict:
    """Cache every video of `source` (folder, .jsonl manifest, or list of them) into `out`.

    Runs as one process or as every rank of a distributed launch; returns the manifest
    (on every rank, after rank 0 wrote it).
    """
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from ..models.codecs import build_codec
    from .video import MIN_VIDEO_SECONDS, caption_of, center_crop, list_videos, read_video, video_size

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    out = Path(out)
    sources = source if isinstance(source, (list, tuple)) else [source]
    files = sorted({p.resolve() for s in sources for p in list_videos(s)})
    if not files:
        raise FrameMemError(f"{', '.join(map(str, sources))}: no video files found")
    key = cache_key(config)
    header = out / "key.json"
    if header.is_file() and json.loads(header.read_text())["key"] != key:
        raise FrameMemError(f"{out}: holds a cache for another preset; choose a new folder")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out / "progress").mkdir(exist_ok=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(header, {"preset": config.preset, "key": key})

    finished = _done(out)
    todo = [p for p in files if str(p) not in finished][rank::world]
    accelerator.wait_for_everyone()  # every rank split the same list before any rank records progress

    mc = config.model
    codec = build_codec(mc).to(accelerator.device)
    geometry = lr_geometry(config, codec.channels)
    text_encoder = None  # a frozen encoder's caption embeddings are cached; a trained one's cannot be
    if key["text_encoder"]:
        from ..models.text_encoders import build_text_encoder

        text_encoder = build_text_encoder(config.ar, 0, mc.transformer_path).to(accelerator.device)
        if accelerator.is_main_process:
            with atomic_path(out / NULL_TEXT) as tmp:
                save_file({"text": _trim(text_encoder([""]))[0].cpu().contiguous()}, str(tmp))
    choices = buckets(config)
    max_frames = int(round((max_seconds or 3 * mc.seconds) * mc.fps))
    progress_file = out / "progress" / f"rank-{rank}.jsonl"
    if progress_file.is_file():  # drop a line torn by a kill, so that the next append starts a line of its own
        write_text(progress_file, "".join(json.dumps(r) + "\n" for r in read_jsonl(progress_file)))
    tensors, pending = {}, []

    def flush():
        if not pending:
            return
        shard = f"{rank:03d}-{uuid.uuid4().hex[:12]}.safetensors"
        if tensors:
            with atomic_path(out / "shards" / shard) as tmp:
                save_file(tensors, str(tmp))
        with open(progress_file, "a") as f:
            for entry in pending:
                f.write(json.dumps({**entry, "shard": shard} if "id" in entry else entry) + "\n")
        tensors.clear()
        pending.clear()

    for path in tqdm(todo, desc=f"cache (rank {rank})", disable=not todo):
        try:
            bucket = pick_bucket(video_size(path), choices)
            height, width = choices[bucket]
            frames = center_crop(read_video(path, mc.fps, height, width, max_frames), height, width)
            if len(frames) < int(mc.fps * MIN_VIDEO_SECONDS):  # training would never draw it
                raise FrameMemError(f"{path}: too short ({len(frames)} frames < {int(mc.fps * MIN_VIDEO_SECONDS)})")
        except FrameMemError as err:
            log.warning("skipping: %s", err)
            pending.append({"source": str(path), "skipped": str(err)})
            continue
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        frames_used = codec.pixel_frames(codec.latent_frames(video.shape[2]))
        video = video[:, :, :frames_used].to(accelerator.device)
        with torch.no_grad():
            latents = codec.encode(video)
            low_res = geometry.low_res_latents(video, codec, tuple(latents.shape[2:]))
        vid = video_id(path)
        tensors[f"{vid}/latents"] = latents[0].cpu().contiguous()
        for name, part in zip(low_res_names(vid, len(as_parts(low_res))), as_parts(low_res)):
            tensors[name] = part[0].cpu().contiguous()
        caption = caption_of(path)
        if text_encoder is not None:
            with torch.no_grad():
                text = text_encoder([caption or ""])
            tensors[f"{vid}/text"] = _trim(text)[0].cpu().contiguous()
        pending.append({"source": str(path), "id": vid, "bucket": bucket, "frames": frames_used,
                        "latent_frames": latents.shape[2], "caption": caption})
        if len(pending) >= shard_videos:
            flush()
    flush()

    accelerator.wait_for_everyone()
    counts = gather_object([len(todo)])
    if accelerator.is_main_process:
        records = _done(out)
        videos = [r for r in records.values() if "id" in r]
        skipped = {r["source"]: r["skipped"] for r in records.values() if "skipped" in r}
        manifest = {"preset": config.preset, "key": key, "buckets": {k: list(v) for k, v in choices.items()},
                    "videos": sorted(videos, key=lambda r: r["source"]), "skipped": skipped,
                    "processed_per_rank": counts}
        write_json(out / MANIFEST, manifest)
        log.info("cache %s: %d videos, %d skipped", out, len(videos), len(skipped))
    accelerator.wait_for_everyone()
    return json.loads((out / MANIFEST).read_text())


class CachedHistories:
    """Training histories read from a cache: (latents, low_res) windows of whole memory blocks.

    A batch comes from one aspect bucket (drawn in proportion to its videos); each history
    is a random window of `latent_frames` latent frames of a random video long enough for
    it, starting on a block boundary (no flips: a flipped latent is not the latent of the
    flipped video). When no video is long enough, the window shrinks to the longest.
    """

    def __init__(self, path: str | Path, config: FrameMemConfig, block_frames: int):
        self.path = Path(path)
        self.manifest = check_cache(self.path, config)
        self.videos = self.manifest["videos"]
        if not self.videos:
            raise FrameMemError(f"{self.path}: cache holds no usable video")
        self.block = block_frames
        geometry = lr_geometry(config, config.model.codec_channels)
        self.encoders = geometry.per_rate  # one per LR input
        self.several = len(self.encoders) > 1
        self.text_tokens = config.ar.text_tokens
        self.null_text = None
        if self.manifest["key"].get("text_encoder"):
            with safe_open(str(self.path / NULL_TEXT), framework="pt") as f:
                self.null_text = self._pad(f.get_tensor("text"))
        self.by_bucket: dict[str, list[dict]] = {}
        for video in self.videos:
            self.by_bucket.setdefault(video["bucket"], []).append(video)

    def _pad(self, text: torch.Tensor) -> torch.Tensor:
        """(L', D) stored embeddings -> (text_tokens, D) float, zero-padded."""
        out = text.new_zeros(self.text_tokens, text.shape[-1], dtype=torch.float32)
        out[: min(len(text), self.text_tokens)] = text[: self.text_tokens].float()
        return out

    def text(self, video: dict) -> torch.Tensor | None:
        """The cached caption embedding of a video (text_tokens, D), or None."""
        if self.null_text is None:
            return None
        with safe_open(str(self.path / "shards" / video["shard"]), framework="pt") as f:
            return self._pad(f.get_tensor(f"{video['id']}/text"))

    def _read(self, video: dict, start: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        with safe_open(str(self.path / "shards" / video["shard"]), framework="pt") as f:
            latents = f.get_slice(f"{video['id']}/latents")[:, start : start + frames]
            stop = start + -(-frames // self.block) * self.block  # a short video's window is padded to a block
            low_res = tuple(f.get_slice(name)[:, encoder.low_res_index(start) : encoder.low_res_index(stop)]
                            for name, encoder in zip(low_res_names(video["id"], len(self.encoders)), self.encoders))
        return latents, low_res if self.several else low_res[0]

    def batch(self, rng: np.random.Generator, size: int, latent_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """latents (B, C, T', H', W') and low_res (B, C, T'', h, w) of one bucket."""
        latents, low_res, _, _ = self.captioned_batch(rng, size, latent_frames)
        return latents, low_res

    def captioned_batch(self, rng: np.random.Generator, size: int, latent_frames: int):
        """`batch`, the captions of its videos ("" where a video has none) and, for a cache
        of a frozen text encoder, their embeddings (B, L, D) (else None)."""
        names = sorted(self.by_bucket)
        weights = np.array([len(self.by_bucket[n]) for n in names], dtype=float)
        pool = self.by_bucket[names[rng.choice(len(names), p=weights / weights.sum())]]
        longest = max(v["latent_frames"] for v in pool)
        frames = min(latent_frames, longest // self.block * self.block or longest)
        usable = [v for v in pool if v["latent_frames"] >= frames]
        pairs, captions, texts = [], [], []
        for _ in range(size):
            video = usable[rng.integers(len(usable))]
            start = int(rng.integers(0, (video["latent_frames"] - frames) // self.block + 1)) * self.block
            pairs.append(self._read(video, start, frames))
            captions.append(video.get("caption") or "")
            texts.append(self.text(video))
        text = torch.stack(texts) if self.null_text is not None else None
        low_res = [p[1] for p in pairs]
        low_res = tuple(map(torch.stack, zip(*low_res))) if self.several else torch.stack(low_res)
        return torch.stack([p[0] for p in pairs]), low_res, captions, text
