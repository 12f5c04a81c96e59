"""Latent codecs: one interface for the pixel-space default and the Wan VAE.

A codec maps a video (B, 3, T, H, W) in [-1, 1] to latents (B, C, T', H', W')
normalised to roughly unit variance, and back.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import FrameMemError
from .placement import Placement


class LatentCodec(Placement, nn.Module):
    """Interface: `encode`, `decode`, `spatial_factor`, `temporal_factor`, `channels`.

    A causal time axis (the Wan VAEs) keeps frame 0 alone, then blocks of
    `temporal_factor` frames: T pixel frames (T = 1 + 4k) give 1 + k latent frames.
    The base class alone is the geometry of a codec without its weights (`codec_geometry`).
    """

    spatial_factor: int = 1
    temporal_factor: int = 1
    channels: int = 3
    causal: bool = False

    def latent_frames(self, frames: int) -> int:
        """Latent frames for `frames` pixel frames."""
        if self.causal:
            return 1 + (frames - 1) // self.temporal_factor
        return frames // self.temporal_factor

    def latent_index(self, pixel_frame: int) -> int:
        """The latent frame that holds pixel frame `pixel_frame`."""
        if self.causal:
            return -(-pixel_frame // self.temporal_factor)
        return pixel_frame // self.temporal_factor

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        return self.latent_frames(frames), height // self.spatial_factor, width // self.spatial_factor

    def pixel_frames(self, latent_frames: int) -> int:
        if self.causal:
            return 1 + (latent_frames - 1) * self.temporal_factor
        return latent_frames * self.temporal_factor

    def pixel_index(self, latent_frame: int) -> int:
        """A pixel frame that latent frame `latent_frame` holds: the last of its block."""
        if self.causal:
            return latent_frame * self.temporal_factor
        return latent_frame * self.temporal_factor + self.temporal_factor - 1

    def decode_frames(self, latents: torch.Tensor, pixel_frames: list[int]) -> torch.Tensor:
        """Latent frames scattered in time, (B, C, K, h, w), each decoded from itself alone,
        and of each the pixel frame `pixel_frames[k]` (a frame its block holds): (B, 3, K, H, W).

        A causal decoder reads a block only after its past; here the past of latent k is a
        copy of latent k (a still scene), so nothing but that latent enters its pixels."""
        if self.temporal_factor == 1:
            return self.decode(latents)
        b, c, k, h, w = latents.shape
        single = latents.transpose(1, 2).reshape(b * k, c, 1, h, w)
        pixels = self.decode(single.repeat(1, 1, 2, 1, 1) if self.causal else single)
        pixels = pixels.unflatten(0, (b, k))  # (B, K, 3, T', H, W)
        offsets = [(0 if p == 0 else 1 + (p - 1) % self.temporal_factor) if self.causal else p % self.temporal_factor
                   for p in pixel_frames]
        return torch.stack([pixels[:, i, :, o] for i, o in enumerate(offsets)], dim=2)

    def decode_after(self, latents: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Pixels of `latents` (B, C, n, h, w) as the continuation of the latent frames
        `context` (B, C, c, h, w): a causal decoder reads them after that past and the
        frames of `latents` alone are returned (n · temporal_factor of them)."""
        if not self.causal or context is None or context.shape[2] == 0:
            return self.decode(latents)
        pixels = self.decode(torch.cat([context, latents], dim=2))
        return pixels[:, :, -latents.shape[2] * self.temporal_factor :]


class SpaceToDepthCodec(LatentCodec):
    """Lossless pixel-space codec: f x f pixel blocks become 3·f² channels.

    encode: (B, 3, T, H, W) -> (B, 3f², T, H/f, W/f), values x / scale.
    """

    def __init__(self, factor: int = 4, scale: float = 0.5):
        super().__init__()
        self.spatial_factor = factor
        self.temporal_factor = 1
        self.channels = 3 * factor * factor
        self.scale = scale

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = video.shape
        f = self.spatial_factor
        if h % f or w % f:
            raise FrameMemError(f"frame size {h}x{w} is not a multiple of the codec factor {f}")
        frames = video.transpose(1, 2).reshape(b * t, c, h, w)
        latents = F.pixel_unshuffle(frames, f).reshape(b, t, c * f * f, h // f, w // f).transpose(1, 2)
        return latents / self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = latents.shape
        f = self.spatial_factor
        frames = (latents * self.scale).transpose(1, 2).reshape(b * t, c, h, w)
        video = F.pixel_shuffle(frames, f).reshape(b, t, c // (f * f), h * f, w * f).transpose(1, 2)
        return video


class WanVAECodec(LatentCodec):
    """Wan 2.1 / 2.2 VAE through diffusers' `AutoencoderKLWan`.

    Latents are normalised with the VAE's own `latents_mean` / `latents_std`; time is causal.
    """

    causal = True

    def __init__(self, vae):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        self.spatial_factor = int(cfg.scale_factor_spatial)
        self.temporal_factor = int(cfg.scale_factor_temporal)
        self.channels = int(cfg.z_dim)
        self.register_buffer("mean", torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, path_or_id: str, torch_dtype: torch.dtype = torch.float32) -> "WanVAECodec":
        from diffusers import AutoencoderKLWan

        from ..hub import load_pretrained

        vae = load_pretrained(AutoencoderKLWan, path_or_id, "vae", torch_dtype=torch_dtype)
        return cls(vae)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        latents = self.vae.encode(video.to(dtype)).latent_dist.mode().float()
        return (latents - self.mean) / self.std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        latents = (latents * self.std + self.mean).to(dtype)
        return self.vae.decode(latents).sample.float().clamp(-1, 1)


def build_codec(model_config) -> LatentCodec:
    if model_config.codec == "space_to_depth":
        return SpaceToDepthCodec(model_config.codec_factor, model_config.codec_scale)
    codec = WanVAECodec.from_pretrained(model_config.vae_path)
    found = (codec.spatial_factor, codec.temporal_factor, codec.channels)
    expected = (model_config.codec_factor, model_config.codec_temporal_factor, model_config.codec_channels)
    if model_config.codec_channels and found != expected:
        raise FrameMemError(
            f"{model_config.vae_path}: this VAE (spatial x{found[0]}, temporal x{found[1]}, {found[2]} channels) "
            f"does not fit the preset (x{expected[0]}, x{expected[1]}, {expected[2]} channels)"
        )
    return codec


def codec_geometry(model_config) -> LatentCodec:
    """The preset's codec factors without loading any weights (for planning)."""
    geometry = LatentCodec()
    geometry.spatial_factor = model_config.codec_factor
    geometry.temporal_factor = model_config.codec_temporal_factor
    geometry.channels = model_config.codec_channels or 3 * model_config.codec_factor**2
    geometry.causal = model_config.codec == "wan_vae"
    return geometry


def check_divisible(height: int, width: int, codec: LatentCodec, patch: tuple[int, int, int]) -> None:
    """Frames must tile exactly into codec blocks times patches."""
    unit_h = codec.spatial_factor * patch[1]
    unit_w = codec.spatial_factor * patch[2]
    if height % unit_h or width % unit_w:
        raise FrameMemError(
            f"resolution {width}x{height} is not a multiple of codec x patch ({unit_w}x{unit_h})"
        )


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = ["LatentCodec", "SpaceToDepthCodec", "WanVAECodec", "build_codec", "codec_geometry", "check_divisible", "ceil_div"]
