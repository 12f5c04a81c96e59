"""Several memory encoders at once (paper §4.5, Fig. 10): e.g. 4×4×2 for the layout of
every moment plus 2×2×8 for finer detail at a coarser time step, their tokens side by side.

Each encoder is a `MemoryEncoder` at its own rate, with its own LR input and its own
positions. The unit of appends is the least common multiple of their temporal blocks, and
for whole units the tokens are laid out unit by unit (per unit: the first encoder's tokens,
then the second's, ...), so the memory of a video is still the concatenation of the memory
of its units and `MemoryState` appends and drops units exactly as it does blocks. RoPE reads
the positions, so the order of memory tokens changes nothing the DiT computes.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..errors import FrameMemError
from ..rates import EMPTY_RATES, rate_list
from .codecs import LatentCodec
from .memory_encoder import MemoryEncoder, MemoryTokens
from .placement import Placement


class MultiMemoryEncoder(Placement, ModelMixin, ConfigMixin):
    """φ as several `MemoryEncoder`s, one per rate; same interface as one `MemoryEncoder`
    except that the LR input is a tuple (one tensor per encoder, or None without LR branch).

    Args: as `MemoryEncoder`, with `rate` a list of rates (h, w, t). The cross-attention
    enhancement is not offered with several encoders (each would bring its own features).
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 48,
        dit_width: int = 3072,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        rate: tuple[tuple[int, int, int], ...] = ((4, 4, 2), (2, 2, 8)),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        attention_heads: int = 8,
        variant: str = "proposed",
    ):
        super().__init__()
        rates = rate_list(rate)
        if not rates:
            raise FrameMemError(f"memory encoder: {EMPTY_RATES}")
        self.encoders = nn.ModuleList(
            MemoryEncoder(latent_channels=latent_channels, dit_width=dit_width, patch_size=tuple(patch_size),
                          rate=tuple(r), widths=tuple(widths), attention_heads=attention_heads, variant=variant)
            for r in rates)
        self.patch = tuple(patch_size)
        self.use_lr = self.encoders[0].use_lr

    has_features = False
    local_in_time = True

    @property
    def per_rate(self) -> tuple[MemoryEncoder, ...]:
        """The single-rate φ, one per LR input."""
        return tuple(self.encoders)

    def init_from_patch_embedding(self, patch_embedding: nn.Conv3d) -> None:
        for encoder in self.encoders:
            encoder.init_from_patch_embedding(patch_embedding)

    # ---- geometry -------------------------------------------------------------------
    @property
    def block_frames(self) -> int:
        """Latent frames of one unit (the lcm of the encoders' blocks): the unit of appends."""
        return math.lcm(*(e.block_frames for e in self.encoders))

    def token_grid(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return self.encoders[0].token_grid(latent_shape)

    def token_count(self, latent_shape: tuple[int, int, int]) -> int:
        """Memory tokens of all encoders for a latent grid (padded counts), without running them."""
        return sum(e.token_count(latent_shape) for e in self.encoders)

    def ideal_token_count(self, latent_shape: tuple[int, int, int]) -> float:
        return sum(e.ideal_token_count(latent_shape) for e in self.encoders)

    # ---- forward --------------------------------------------------------------------
    def forward(self, video: torch.Tensor, latents: torch.Tensor, codec: LatentCodec, patch_embedding: nn.Conv3d,
                chunk_blocks: int | None = None) -> MemoryTokens:
        low_res = self.low_res_latents(video, codec, tuple(latents.shape[2:]))
        return self.encode_latents(latents, low_res, patch_embedding, chunk_blocks)

    def low_res_latents(self, video: torch.Tensor, codec: LatentCodec, latent_shape) -> tuple | None:
        """Each encoder's LR input (`MemoryEncoder.low_res_latents`), as a tuple; None without LR branch."""
        if not self.use_lr:
            return None
        return tuple(e.low_res_latents(video, codec, latent_shape) for e in self.encoders)

    def low_res_span(self, low_res: tuple | None, start: int, stop: int | None = None) -> tuple | None:
        """Each encoder's LR input of latent frames [start, stop) (`MemoryEncoder.low_res_span`)."""
        if low_res is None:
            return None
        return tuple(e.low_res_span(lr, start, stop) for e, lr in zip(self.encoders, low_res))

    def encode_latents(self, latents: torch.Tensor, low_res: tuple | None, patch_embedding: nn.Conv3d,
                       chunk_blocks: int | None = None) -> MemoryTokens:
        """latents (B, C, T', H', W') and the tuple of LR inputs -> every encoder's tokens
        (B, ΣN_i, D) and positions (ΣN_i, 3); unit by unit when T' is whole units."""
        if low_res is not None and len(low_res) != len(self.encoders):
            raise FrameMemError(f"{len(low_res)} low-resolution inputs for {len(self.encoders)} memory encoders")
        parts = [e.encode_latents(latents, None if low_res is None else lr, patch_embedding, chunk_blocks)
                 for e, lr in zip(self.encoders, low_res or [None] * len(self.encoders))]
        units = latents.shape[2] // self.block_frames
        if latents.shape[2] % self.block_frames == 0:
            tokens = torch.cat([p.tokens.unflatten(1, (units, -1)) for p in parts], dim=2).flatten(1, 2)
            positions = torch.cat([p.positions.unflatten(0, (units, -1)) for p in parts], dim=1).flatten(0, 1)
        else:  # a retrieval history of any length: padded by each encoder, encoder by encoder
            tokens = torch.cat([p.tokens for p in parts], dim=1)
            positions = torch.cat([p.positions for p in parts])
        return MemoryTokens(tokens, positions, None)
