"""The memory of a growing video, kept per block, that generation appends to.

φ is local in time (every layer looks inside its own block of latent frames), so the
memory of a video is the concatenation of the memory of its blocks: appending a section
encodes only the new frames, and blocks older than the history window leave the memory.
A `MemoryState` can be saved (safetensors) and loaded, so a history is compressed once and
reused for many continuations.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import FrameMemError
from ..files import atomic_path
from ..models.memory_encoder import MemoryTokens

# A causal VAE (Wan) decodes a generated section after this many latent frames of the video
# before it, as its past; a bounded past keeps decoding cost per section, not per video.
DECODE_PAST = 4
FORMAT = "framemem-memory-state/1"


class MemoryState:
    """Memory tokens of everything appended so far, block by block (batch of one).

    `append(latents, low_res)` takes whole memory blocks of latents (1, C, n, h, w) that
    follow everything appended so far; blocks beyond `max_blocks` (the history window) are
    dropped. Positions stay absolute (RoPE only sees differences).

    Besides the tokens it keeps what continuing the video needs: `decode_past`, the last
    latent frames (a causal decoder reads the next section after them), and for a causal
    codec `pixels`, the video so far (its low-resolution latents group frames from the start).
    """

    def __init__(self, model, max_blocks: int | None = None):
        if not getattr(model.encoder, "local_in_time", False):
            raise FrameMemError("generation needs a memory encoder that is local in time (not the FramePack schedule)")
        self.model, self.max_blocks = model, max_blocks
        # per block: tokens (1, n, D), positions (n, 3), φ's features (1, n, F) or None
        self.blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        self.latent_frames = 0  # latent frames appended so far (dropped ones included)
        self.decode_past: torch.Tensor | None = None  # (1, C, ≤ DECODE_PAST, h, w)
        self.pixels: torch.Tensor | None = None  # (1, 3, T, H, W), causal codecs only
        self.window: torch.Tensor | None = None  # (1, C, ≤ ar.window_frames, h, w): the sliding window

    def append(self, latents: torch.Tensor, low_res: torch.Tensor | None, pixels: torch.Tensor | None = None) -> None:
        """Encode and append whole blocks of latents; `pixels` (their frames) are kept for a causal codec."""
        encoder = self.model.encoder
        if latents.shape[2] % encoder.block_frames:
            raise FrameMemError(f"append {latents.shape[2]} latent frames: need whole blocks of {encoder.block_frames}")
        memory = encoder.encode_latents(latents, low_res, self.model.dit.patch_embedding,
                                        self.model.config.model.encoder_chunk_blocks)
        tm = latents.shape[2] // encoder.block_frames  # whole blocks: φ lays its tokens out block by block
        tokens = memory.tokens.unflatten(1, (tm, -1))
        positions = memory.positions.unflatten(0, (tm, -1)).clone()
        positions[..., 0] += self.latent_frames / encoder.patch[0]
        features = None if memory.features is None else memory.features.unflatten(1, (tm, -1))
        self.blocks += [(tokens[:, i], positions[i], None if features is None else features[:, i]) for i in range(tm)]
        if self.max_blocks is not None:
            self.blocks = self.blocks[-self.max_blocks :]
        self.latent_frames += latents.shape[2]
        past = latents if self.decode_past is None else torch.cat([self.decode_past, latents], dim=2)
        self.decode_past = past[:, :, -DECODE_PAST:]
        width = self.model.config.ar.window_frames
        if width:
            window = latents if self.window is None else torch.cat([self.window, latents], dim=2)
            self.window = window[:, :, -width:]
        if pixels is not None and self.model.codec.causal:
            self.pixels = pixels if self.pixels is None else torch.cat([self.pixels, pixels], dim=2)

    def memory(self) -> MemoryTokens | None:
        """The tokens (1, N, D) and positions (N, 3) the DiT reads, the sliding window's
        after the memory's; None while empty."""
        if not self.blocks:
            return None
        features = None if self.blocks[0][2] is None else torch.cat([b[2] for b in self.blocks], 1)
        memory = MemoryTokens(torch.cat([b[0] for b in self.blocks], 1), torch.cat([b[1] for b in self.blocks]), None,
                              features, getattr(self.model.encoder, "feature_attention", None))
        return memory if self.window is None else self.model.context(memory, self.window, self.latent_frames)

    @property
    def tokens(self) -> int:
        """How many tokens `memory()` returns (counted, not computed)."""
        if not self.blocks:
            return 0
        _, ph, pw = self.model.dit.patch_size
        window = 0 if self.window is None else self.window.shape[2] * (self.window.shape[3] // ph) * (self.window.shape[4] // pw)
        return sum(b[0].shape[1] for b in self.blocks) + window

    @property
    def seconds(self) -> float:
        """Length of the video appended so far (dropped blocks included)."""
        mc = self.model.config.model
        return self.model.codec.pixel_frames(self.latent_frames) / mc.fps if self.latent_frames else 0.0

    def copy(self) -> "MemoryState":
        """An independent copy (the tensors are shared until appended to, which replaces them)."""
        other = copy.copy(self)
        other.blocks = list(self.blocks)
        return other

    # ---- persistence ------------------------------------------------------------------
    def _identity(self) -> dict:
        """What a loaded state must agree on with the model that reads it."""
        config = self.model.encoder.config
        rate = json.loads(json.dumps(list(config.rate)))  # [h, w, t], or one such list per encoder
        return {"preset": self.model.config.preset, "rate": rate, "variant": config.variant,
                "dit_width": int(config.dit_width), "latent_channels": int(config.latent_channels),
                "window_frames": int(self.model.config.ar.window_frames),
                "cross_attention": bool(getattr(self.model.encoder, "has_features", False))}

    def save(self, path: str | Path) -> None:
        """Write the state as one safetensors file (atomically); no pickles."""
        tensors = {}
        for i, (tokens, positions, features) in enumerate(self.blocks):
            tensors[f"block.{i}.tokens"] = tokens.detach().float().cpu().contiguous()
            tensors[f"block.{i}.positions"] = positions.detach().float().cpu().contiguous()
            if features is not None:
                tensors[f"block.{i}.features"] = features.detach().float().cpu().contiguous()
        for name in ("decode_past", "pixels", "window"):
            value = getattr(self, name)
            if value is not None:
                tensors[name] = value.detach().float().cpu().contiguous()
        meta = {"format": FORMAT, "blocks": str(len(self.blocks)), "latent_frames": str(self.latent_frames),
                "max_blocks": json.dumps(self.max_blocks), "model": json.dumps(self._identity())}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path, model) -> "MemoryState":
        """A state saved by `save`, for `model` (its encoder must be the one that wrote it)."""
        path = Path(path)
        if not path.is_file():
            raise FrameMemError(f"{path}: no such memory file")
        try:
            tensors = load_file(str(path))

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as err:
            raise FrameMemError(f"{path}: not a saved memory ({err})") from None
        if meta.get("format") != FORMAT:
            raise FrameMemError(f"{path}: not a framemem memory state (format {meta.get('format')!r})")
        state = cls(model, json.loads(meta["max_blocks"]))
        saved = json.loads(meta["model"])
        width = state._identity()["window_frames"]
        if "window_frames" not in saved:  # saved before the window existed: its last latents can rebuild it
            saved["window_frames"] = width if width <= DECODE_PAST else 0
        saved.setdefault("cross_attention", False)  # saved before the cross-attention existed
        if saved != state._identity():
            differ = ", ".join(f"{k} {saved.get(k)} (model: {v})" for k, v in state._identity().items() if saved.get(k) != v)
            raise FrameMemError(f"{path}: this memory was made by another model: {differ}")
        device = next(model.parameters()).device
        features = lambda i: tensors[f"block.{i}.features"].to(device) if f"block.{i}.features" in tensors else None  # noqa: E731
        state.blocks = [(tensors[f"block.{i}.tokens"].to(device), tensors[f"block.{i}.positions"].to(device), features(i))
                        for i in range(int(meta["blocks"]))]
        state.latent_frames = int(meta["latent_frames"])
        state.decode_past = tensors["decode_past"].to(device) if "decode_past" in tensors else None
        state.pixels = tensors["pixels"].to(device) if "pixels" in tensors else None
        state.window = tensors["window"].to(device) if "window" in tensors else None
        if state.window is None and width and state.decode_past is not None:
            state.window = state.decode_past[:, :, -width:]
        return state


def section_low_res(model, state: MemoryState, section_pixels: torch.Tensor, section: int) -> torch.Tensor | None:
    """The LR-branch input of a new section (`section` latent frames whose pixels are
    `section_pixels`) as encoding the whole video gives it. A causal codec groups frames
    from the video's start (frame 0 alone, then blocks), so its LR latents are taken from
    the whole video's (`state.pixels` + the section); otherwise the section's own pixels
    are enough."""
    codec, encoder = model.codec, model.encoder
    if not codec.causal:
        shape = codec.latent_shape(section_pixels.shape[2], *section_pixels.shape[3:])
        return encoder.low_res_latents(section_pixels, codec, shape)
    video = section_pixels if state.pixels is None else torch.cat([state.pixels, section_pixels], dim=2)
    low_res = encoder.low_res_latents(video, codec, codec.latent_shape(video.shape[2], *video.shape[3:]))
    return encoder.low_res_span(low_res, -section)
