"""FramePack's geometric schedule as a memory (Zhang & Agrawala, 2025), a peer of φ.

The newest latent frames keep the most tokens and older ones are packed with larger
kernels; in token units (after the DiT's 1×2×2 patch):

    older frames  [0, T − r − m)   kernel 4×4×4   (patchifier_4x)
    middle frames [T − r − m, T − r) kernel 2×2×2 (patchifier_2x)
    recent frames [T − r, T)       kernel 1×1×1   (patchifier_1x, the DiT's own patch)

Each level is one Conv3d with kernel = stride, initialised FramePack's way from the DiT's
patch embedding (`memory.init_patchifier`); each level's grid is padded at its end by
replicating (as FramePack does), and a token sits at the mean position of its footprint
(RoPE averaged over the kernel). With r = 1, m = 2 its budget is close to 4×4×2's: 160
tokens for the tiny preset's 20 s, 5,070 vs 6,240 for 20 s of 480p with an 8× VAE.

Unlike φ it depends on where the history ends, so it cannot be appended to; it is a
baseline for retrieval, not a stage-2 memory.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .codecs import LatentCodec
from .memory_encoder import MemoryTokens, init_patchifier, memory_grid, memory_positions
from .placement import Placement

LEVELS = (4, 2, 1)  # kernel multiples of the patch, oldest level first


def framepack_segments(frames: int, recent: int = 1, middle: int = 2) -> list[tuple[int, int, int]]:
    """(start, end, kernel multiple) of each non-empty level over `frames` token frames."""
    recent = min(recent, frames)
    middle = min(middle, frames - recent)
    bounds = (0, frames - recent - middle, frames - recent, frames)
    return [(a, b, k) for a, b, k in zip(bounds[:-1], bounds[1:], LEVELS) if b > a]


def framepack_tokens(token_grid: tuple[int, int, int], recent: int = 1, middle: int = 2) -> int:
    """Tokens of the schedule for a post-patch token grid (T, H, W), padding included."""
    t, h, w = token_grid
    return sum(math.prod(memory_grid((b - a, h, w), (k, k, k))) for a, b, k in framepack_segments(t, recent, middle))


class FramePackEncoder(Placement, ModelMixin, ConfigMixin):
    """FramePack's packed context behind φ's interface.

    Args:
        latent_channels: codec channels C. dit_width: D. patch_size: the DiT's patch (t, h, w).
        recent / middle: latent frames at the patch and at the 2× kernel; older ones at 4×.
    """

    @register_to_config
    def __init__(self, latent_channels: int = 48, dit_width: int = 3072, patch_size: tuple[int, int, int] = (1, 2, 2),
                 recent: int = 1, middle: int = 2, variant: str = "framepack"):
        super().__init__()
        self.patch = tuple(patch_size)
        self.patchifiers = nn.ModuleDict({
            f"{k}x": nn.Conv3d(latent_channels, dit_width, tuple(k * p for p in self.patch), stride=tuple(k * p for p in self.patch))
            for k in LEVELS
        })

    def init_from_patch_embedding(self, patch_embedding: nn.Conv3d) -> None:
        for k in LEVELS:
            init_patchifier(self.patchifiers[f"{k}x"], patch_embedding, (k, k, k))

    def token_grid(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Post-patch token grid (T, H, W) of a latent grid (T', H', W')."""
        return tuple(n // p for n, p in zip(latent_shape, self.patch))  # type: ignore[return-value]

    def token_count(self, latent_shape: tuple[int, int, int]) -> int:
        return framepack_tokens(self.token_grid(latent_shape), self.config.recent, self.config.middle)

    def ideal_token_count(self, latent_shape: tuple[int, int, int]) -> float:
        return float(self.token_count(latent_shape))

    @property
    def block_frames(self) -> int:
        return self.patch[0]

    def forward(self, video: torch.Tensor, latents: torch.Tensor, codec: LatentCodec,
                patch_embedding: nn.Conv3d, chunk_blocks: int | None = None) -> MemoryTokens:
        """φ's signature; only `latents` (B, C, T', H', W') is read."""
        return self.encode_latents(latents, None, patch_embedding)

    def low_res_latents(self, video: torch.Tensor, codec: LatentCodec, latent_shape) -> None:
        return None  # no low-resolution branch

    def low_res_span(self, low_res: None, start: int, stop: int | None = None) -> None:
        return None

    def encode_latents(self, latents: torch.Tensor, low_res: None, patch_embedding: nn.Conv3d,
                       chunk_blocks: int | None = None) -> MemoryTokens:
        """latents (B, C, T', H', W') -> tokens (B, N, D), positions (N, 3). Each segment
        is patchified on its own, so there is nothing to chunk: `chunk_blocks` is unused."""
        t, h, w = self.token_grid(tuple(latents.shape[2:]))
        pt, ph, pw = self.patch
        tokens, positions = [], []
        for start, end, k in framepack_segments(t, self.config.recent, self.config.middle):
            grid = memory_grid((end - start, h, w), (k, k, k))
            segment = latents[:, :, start * pt : end * pt]
            pad = [0, grid[2] * k * pw - latents.shape[4], 0, grid[1] * k * ph - latents.shape[3],
                   0, grid[0] * k * pt - segment.shape[2]]
            if any(pad):
                segment = F.pad(segment, pad, mode="replicate")
            tokens.append(self.patchifiers[f"{k}x"](segment).flatten(2).transpose(1, 2))
            place = memory_positions((end - start, h, w), (k, k, k))
            place[:, 0] += start
            positions.append(place)
        return MemoryTokens(torch.cat(tokens, dim=1), torch.cat(positions).to(latents.device), None)
