"""The memory encoder φ (paper Fig. 3): a long history becomes a short token context.

    LR branch: pixels ↓ rate → codec.encode → the DiT's own patch embedding → (B, D, grid)
    HR branch: latents → Conv3d stack (temporal strides first, then spatial; channel
               LayerNorm + SiLU before each conv) → spatial attention per memory frame
               → norm, SiLU, 1×1 conv to D (zero-initialised)
    tokens = LR + HR, flattened to (B, N, D), with float positions (N, 3).
    features (cross-attention enhancement only): the HR branch's penultimate features
               (after the attention, before the projection), (B, N, F), which every DiT
               block reads through its own `FeatureKeysValues` (below) in its text
               cross-attention (`models/memory_attention.cross_attention`).

Every layer looks only inside its own block of `rate_t · patch_t` latent frames
(temporal kernels equal their strides; attention is per memory frame), so memory
for a video is the concatenation of memory for its blocks: appending a section only
encodes the new frames.

Grids that do not divide by the rate are padded at the end by replicating the
last row/column/frame (as FramePack does); a token's position is the mean of the
positions its padded block covers, replicated ones counted again (`axis_centres`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .codecs import LatentCodec, ceil_div
from ..errors import FrameMemError
from .placement import Placement

VARIANTS = ("proposed", "only_lr", "without_lr", "large_patchifier")


@dataclass
class MemoryTokens:
    tokens: torch.Tensor  # (B, N, D)
    positions: torch.Tensor  # (N, 3) float (t, h, w) in post-patch latent-grid units
    grid: tuple[int, int, int] | None  # (Tm, Hm, Wm) with N = Tm·Hm·Wm; None for FramePack's levels
    features: torch.Tensor | None = None  # (B, N', F) φ's penultimate features (cross-attention only)
    feature_attention: nn.ModuleList | None = None  # φ's `FeatureKeysValues`, one per DiT block

    def feature_keys_values(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per DiT block, the keys and values (B, N', D) of the features; None without them."""
        if self.features is None or self.feature_attention is None:
            return None
        return [project(self.features) for project in self.feature_attention]


def stand_in_memory(encoder, batch: int, tokens: int, feature_tokens: int | None = None, **like) -> MemoryTokens:
    """Random memory (batch, tokens, D) for timing a DiT step (not φ's output), with
    `feature_tokens` (default: all) features (1, ·, F) when `encoder` (φ or FramePack's
    schedule) has the cross-attention enhancement. `like`: device and dtype."""
    features = None
    if getattr(encoder, "has_features", False):
        features = torch.randn(1, tokens if feature_tokens is None else feature_tokens, encoder.config.widths[-1], **like)
    return MemoryTokens(torch.randn(batch, tokens, encoder.config.dit_width, **like),
                        torch.rand(tokens, 3, device=like.get("device")) * 8, None, features,
                        getattr(encoder, "feature_attention", None))


def axis_centres(size: int, rate: int) -> torch.Tensor:
    """Centres of the receptive fields of ceil(size / rate) memory cells along one axis,
    with replicate padding: cell i covers min(j, size-1) for j in [i·rate, (i+1)·rate)."""
    cells = ceil_div(size, rate)
    idx = torch.arange(cells * rate).clamp(max=size - 1).float().view(cells, rate)
    return idx.mean(dim=1)


def memory_positions(token_grid: tuple[int, int, int], rate_thw: tuple[int, int, int]) -> torch.Tensor:
    """(N, 3) positions of memory tokens for a post-patch token grid (T, H, W) and rate (t, h, w)."""
    ct, ch, cw = (axis_centres(n, r) for n, r in zip(token_grid, rate_thw))
    grid = torch.stack(torch.meshgrid(ct, ch, cw, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3)


def memory_grid(token_grid: tuple[int, int, int], rate_thw: tuple[int, int, int]) -> tuple[int, int, int]:
    """Memory grid (Tm, Hm, Wm) φ returns for a post-patch token grid (T, H, W) at rate
    (t, h, w): each axis padded up to a whole number of rate blocks."""
    return tuple(ceil_div(n, r) for n, r in zip(token_grid, rate_thw))  # type: ignore[return-value]


@torch.no_grad()
def init_patchifier(conv: nn.Conv3d, patch_embedding: nn.Conv3d, repeats: tuple[int, int, int]) -> None:
    """FramePack's initialisation of a larger patchifier: the DiT's patch-embedding weight
    repeated (t, h, w) times over the larger kernel and divided by the number of repeats, so
    that at start it embeds the block-averaged latents exactly as the DiT embeds a patch."""
    weight = patch_embedding.weight
    for axis, r in zip((2, 3, 4), repeats):
        weight = weight.repeat_interleave(r, axis)
    conv.weight.copy_(weight / math.prod(repeats))
    conv.bias.copy_(patch_embedding.bias)


def _stride_plan(total: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """Factor 2-power strides (t, h, w) into stride-2 steps, all temporal steps first."""
    steps = []
    t, h, w = total
    for _ in range(int(math.log2(t))):
        steps.append((2, 1, 1))
    while h > 1 or w > 1:
        sh, sw = (2 if h > 1 else 1), (2 if w > 1 else 1)
        steps.append((1, sh, sw))
        h, w = h // sh, w // sw
    return steps


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over channels at every (t, h, w) of (B, C, T, H, W): bounded activations,
    and no statistics shared across time (φ stays local in time)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.movedim(1, -1)).movedim(-1, 1)  # channels-last strides
        # Without autograd (appends, retrieval) hand the next Conv3d an NCDHW input: a
        # channels-last one makes it re-lay out its weights on every call, which dominates
        # a one-section append (2.5x slower on CPU, measured). Training keeps channels-last,
        # whose kernels were 12 % faster there.
        return y if torch.is_grad_enabled() else y.contiguous()


class FrameAttention(nn.Module):
    """Pre-norm self-attention over the tokens of each memory frame (local in time)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        seq = x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)
        normed = self.norm(seq)
        seq = seq + self.attn(normed, normed, normed, need_weights=False)[0]
        return seq.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class FeatureKeysValues(nn.Module):
    """One DiT block's keys and values of φ's features (B, M, F) -> two (B, M, D): the added
    projections of a decoupled cross-attention, with an RMS-normed key like Wan's image
    keys. The value projection starts at zero, so a fresh one adds nothing."""

    def __init__(self, feature_dim: int, dim: int, eps: float = 1e-6):
        super().__init__()
        self.to_k = nn.Linear(feature_dim, dim)
        self.to_v = nn.Linear(feature_dim, dim)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        nn.init.zeros_(self.to_v.weight)
        nn.init.zeros_(self.to_v.bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.norm_k(self.to_k(features)), self.to_v(features)


class MemoryEncoder(Placement, ModelMixin, ConfigMixin):
    """φ. Own weights are the HR branch only; the LR branch reuses the DiT's patch embedding.

    Args:
        latent_channels: codec channels C.
        dit_width: D, the DiT's inner width.
        patch_size: the DiT's patch (t, h, w).
        rate: compression (h, w, t) on top of codec and patch.
        widths: HR Conv3d channels (paper: 64, 128, 256, 512).
        attention_heads: heads of the attention at the last width.
        variant: proposed (LR + HR), only_lr, without_lr, or large_patchifier (FramePack's
            baseline: one Conv3d with kernel = stride = patch × rate over the latents).
        cross_attention_layers: with N > 0, φ also returns its penultimate HR features and
            holds one `FeatureKeysValues` per DiT block (N = the DiT's depth): the
            cross-attention enhancement (paper §4.5). Needs the HR branch.
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 48,
        dit_width: int = 3072,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        rate: tuple[int, int, int] = (4, 4, 2),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        attention_heads: int = 8,
        variant: str = "proposed",
        cross_attention_layers: int = 0,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise FrameMemError(f"unknown memory variant '{variant}' ({', '.join(VARIANTS)})")
        if cross_attention_layers and variant not in ("proposed", "without_lr"):
            raise FrameMemError(f"cross-attention reads φ's high-resolution features; variant {variant} has none")
        rh, rw, rt = rate
        self.rate_thw = (rt, rh, rw)
        self.patch = tuple(patch_size)
        self.use_lr = variant in ("proposed", "only_lr")
        self.use_hr = variant in ("proposed", "without_lr")
        total = (rt * self.patch[0], rh * self.patch[1], rw * self.patch[2])
        if variant == "large_patchifier":
            self.patchifier = nn.Conv3d(latent_channels, dit_width, total, stride=total)
        if not self.use_hr:
            return
        strides = _stride_plan(total)
        strides += [(1, 1, 1)] * max(0, len(widths) - 1 - len(strides))
        layers: list[nn.Module] = [nn.Conv3d(latent_channels, widths[0], (1, 3, 3), padding=(0, 1, 1))]
        for i, (st, sh, sw) in enumerate(strides):
            c_in, c_out = widths[min(i, len(widths) - 1)], widths[min(i + 1, len(widths) - 1)]
            kh, kw = (4 if sh == 2 else 3), (4 if sw == 2 else 3)
            conv = nn.Conv3d(c_in, c_out, (st, kh, kw), stride=(st, sh, sw), padding=(0, 1, 1))
            layers += [ChannelNorm(c_in), nn.SiLU(), conv]
        self.convs = nn.Sequential(*layers)
        self.attention = FrameAttention(widths[-1], attention_heads)
        self.norm_out = ChannelNorm(widths[-1])
        self.proj_out = nn.Conv3d(widths[-1], dit_width, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        if cross_attention_layers:
            self.feature_attention = nn.ModuleList(
                FeatureKeysValues(widths[-1], dit_width) for _ in range(cross_attention_layers))

    local_in_time = True  # the memory of a video is the memory of its blocks (appendable)

    @property
    def per_rate(self) -> tuple["MemoryEncoder", ...]:
        """The single-rate φ this one is made of, one per LR input: itself."""
        return (self,)

    @property
    def has_features(self) -> bool:
        """Whether φ returns features for the DiT's cross-attention (`cross_attention_layers`)."""
        return hasattr(self, "feature_attention")

    def init_from_patch_embedding(self, patch_embedding: nn.Conv3d) -> None:
        """Initialise a large patchifier from the DiT's patch embedding (`init_patchifier`)."""
        if hasattr(self, "patchifier"):
            init_patchifier(self.patchifier, patch_embedding, self.rate_thw)

    # ---- geometry -------------------------------------------------------------------
    def token_grid(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Post-patch token grid (T, H, W) of a latent grid (T', H', W')."""
        return tuple(n // p for n, p in zip(latent_shape, self.patch))  # type: ignore[return-value]

    def memory_grid(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Memory grid (Tm, Hm, Wm) the encoder really returns (padded)."""
        return memory_grid(self.token_grid(latent_shape), self.rate_thw)

    def token_count(self, latent_shape: tuple[int, int, int]) -> int:
        """Memory tokens for a latent grid, without running the model (the padded count)."""
        return math.prod(self.memory_grid(latent_shape))

    def ideal_token_count(self, latent_shape: tuple[int, int, int]) -> float:
        """The paper's idealised count: full-context tokens / rate."""
        return math.prod(self.token_grid(latent_shape)) / math.prod(self.rate_thw)

    @property
    def block_frames(self) -> int:
        """Latent frames of one temporal block: the shortest history, and the unit of appends."""
        return self.rate_thw[0] * self.patch[0]

    # ---- forward --------------------------------------------------------------------
    def forward(
        self, video: torch.Tensor, latents: torch.Tensor, codec: LatentCodec, patch_embedding: nn.Conv3d,
        chunk_blocks: int | None = None,
    ) -> MemoryTokens:
        """Compress a history given as pixels and their latents.

        Args:
            video: (B, 3, T, H, W) pixels in [-1, 1] (used by the LR branch).
            latents: (B, C, T', H', W') codec latents of `video` (used by the HR branch).
            codec: the latent codec; patch_embedding: the DiT's patchifier.
            chunk_blocks: encode this many memory frames at a time (bounded peak memory,
                same result); None encodes the whole history at once.
        Returns:
            MemoryTokens with tokens (B, N, D) and positions (N, 3).
        """
        low_res = self.low_res_latents(video, codec, tuple(latents.shape[2:]))
        return self.encode_latents(latents, low_res, patch_embedding, chunk_blocks)

    def low_res_latents(self, video: torch.Tensor, codec: LatentCodec, latent_shape) -> torch.Tensor | None:
        """The LR branch's input (None without one): pixels padded like the latents, area-
        downsampled by the rate, encoded: (B, C, Tm·patch_t, H'p/rh, W'p/rw), where H'p, W'p
        are the padded latent sizes. `framemem cache` stores it beside the latents."""
        if not self.use_lr:
            return None
        grid = self.memory_grid(tuple(latent_shape))
        padded = tuple(g * r * p for g, r, p in zip(grid, self.rate_thw, self.patch))
        rt, rh, rw = self.rate_thw
        f = codec.spatial_factor
        t_pix, h_pix, w_pix = codec.pixel_frames(padded[0]), padded[1] * f, padded[2] * f
        _, _, t, h, w = video.shape
        if (t_pix, h_pix, w_pix) != (t, h, w):
            video = F.pad(video, [0, w_pix - w, 0, h_pix - h, 0, t_pix - t], mode="replicate")
        if codec.causal and rt > 1:
            # latent 0 holds pixel frame 0 alone, latent j the block 4j-3..4j: the first rt latents
            # (1 + 4(rt-1) pixels) become LR pixel frame 0, then every rt pixel frames one, so each
            # LR latent covers exactly the pixels of the rt latents of its memory frame
            head = 1 + codec.temporal_factor * (rt - 1)
            rest = F.avg_pool3d(video[:, :, head:], (rt, 1, 1)) if t_pix > head else video[:, :, :0]
            video = torch.cat([video[:, :, :head].mean(dim=2, keepdim=True), rest], dim=2)
        size = (codec.pixel_frames(grid[0] * self.patch[0]), h_pix // rh, w_pix // rw)
        return codec.encode(F.interpolate(video, size=size, mode="area"))

    def low_res_span(self, low_res: torch.Tensor | None, start: int, stop: int | None = None) -> torch.Tensor | None:
        """The part of `low_res_latents` that belongs to latent frames [start, stop) (whole
        blocks; negative values count from the end, as in slicing; None: to the end)."""
        if low_res is None:
            return None
        return low_res[:, :, self.low_res_index(start) : self.low_res_index(stop)]

    def low_res_index(self, latent_frame: int | None) -> int | None:
        """Where latent frame `latent_frame` (a block boundary) starts in the LR input."""
        return None if latent_frame is None else latent_frame // self.block_frames * self.patch[0]

    def encode_latents(
        self, latents: torch.Tensor, low_res: torch.Tensor | None, patch_embedding: nn.Conv3d,
        chunk_blocks: int | None = None,
    ) -> MemoryTokens:
        """Compress a history given as latents (B, C, T', H', W') and `low_res_latents`
        (as read from a cache); `chunk_blocks` as in `forward`. A cache stores the LR copy
        for every variant, so a variant without an LR branch ignores it."""
        low_res = low_res if self.use_lr else None
        latent_shape = tuple(latents.shape[2:])
        grid = self.memory_grid(latent_shape)
        padded = tuple(g * r * p for g, r, p in zip(grid, self.rate_thw, self.patch))
        pad = [0, padded[2] - latent_shape[2], 0, padded[1] - latent_shape[1], 0, padded[0] - latent_shape[0]]
        if any(pad) and (self.use_hr or hasattr(self, "patchifier")):
            latents = F.pad(latents, pad, mode="replicate")
        if low_res is not None and low_res.shape[2] != grid[0] * self.patch[0]:
            raise FrameMemError(f"low-resolution latents have {low_res.shape[2]} frames, φ expects {grid[0] * self.patch[0]}")
        step = chunk_blocks or grid[0]
        block, lr_block = self.block_frames, self.patch[0]
        chunks = [
            self._encode_blocks(latents[:, :, i * block : (i + step) * block],
                                None if low_res is None else low_res[:, :, i * lr_block : (i + step) * lr_block],
                                patch_embedding)
            for i in range(0, grid[0], step)
        ]
        tokens, features = (torch.cat(parts, dim=2).flatten(2).transpose(1, 2) if parts[0] is not None else None
                            for parts in zip(*chunks))
        positions = memory_positions(self.token_grid(latent_shape), self.rate_thw).to(tokens.device)
        return MemoryTokens(tokens, positions, grid, features, getattr(self, "feature_attention", None))

    def _encode_blocks(self, latents, low_res, patch_embedding):
        """Whole, padded temporal blocks (B, C, tm·block, H', W') -> (B, D, tm, Hm, Wm), and
        the features (B, F, tm, Hm, Wm) or None.

        Every layer is local to a block, so the blocks are run as a batch (B·tm, C, block,
        H', W'): the same result, and short inputs (an appended section) still take
        oneDNN's kernels, which PyTorch picks only for batch > 1 or long time axes."""
        b = latents.shape[0]
        tm = latents.shape[2] // self.block_frames if low_res is None else low_res.shape[2] // self.patch[0]

        def as_batch(x):
            return x.unflatten(2, (tm, -1)).transpose(1, 2).flatten(0, 1)

        latents = as_batch(latents) if self.use_hr or hasattr(self, "patchifier") else None  # only LR: unpadded, unused
        low_res = None if low_res is None else as_batch(low_res)
        out, features = self._encode_batch(latents, low_res, patch_embedding)
        return tuple(None if x is None else x.unflatten(0, (b, tm)).transpose(1, 2).squeeze(3) for x in (out, features))

    def _encode_batch(self, latents, low_res, patch_embedding):
        """One block per batch element: (N, C, block, H', W') -> (N, D, 1, Hm, Wm), and the
        penultimate features (N, F, 1, Hm, Wm) when the DiT reads them (else None)."""
        out, hr = 0, None
        if hasattr(self, "patchifier"):
            out = self.patchifier(latents)
        if self.use_hr:
            hr = self.attention(self.convs(latents))
            out = self.proj_out(F.silu(self.norm_out(hr)))
        if low_res is not None:
            out = out + patch_embedding(low_res)
        return out, hr if self.has_features else None
