"""Backbone adapter over diffusers' `WanTransformer3DModel`.

Memory tokens and noisy target tokens share one attention sequence:

    [ memory (B, M, D) ; targets (B, K·h·w, D) ]

* RoPE is built from float 3-D positions (t, h, w) in post-patch latent-grid units:
  memory tokens sit at the centres of their receptive fields, target frames at their
  true latent frame index in the history.
* Timesteps are per token (Wan 2.2 TI2V style): memory at t = 0, targets at their t.
* Only the target tokens are returned, unpatchified to latents.

With no memory and targets at 0..T-1 this is exactly the stock forward (tested).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from diffusers import WanTransformer3DModel
from diffusers.models.embeddings import get_1d_rotary_pos_embed

from ..config import MEMORY_ATTENTION
from ..errors import FrameMemError
from .memory_attention import MemoryKeysValues, joint_block, memory_block, target_block

if TYPE_CHECKING:
    from .memory_encoder import MemoryTokens

NUM_TRAIN_TIMESTEPS = 1000  # Wan embeds t in [0, 1000]
X0_MIN_T = 0.05  # x0-prediction: v = (x_t − x0) / t, with t clamped so that v stays finite near t = 0
# What a preset fixes of the DiT's architecture; loaded weights must agree.
ARCHITECTURE_KEYS = ("num_attention_heads", "attention_head_dim", "num_layers", "in_channels", "ffn_dim", "patch_size")


def rope_from_positions(positions: torch.Tensor, head_dim: int, theta: float = 10000.0):
    """Wan's 3-D rotary embedding at float positions.

    Args:
        positions: (B, N, 3) float (t, h, w).
    Returns:
        (cos, sin), each (B, N, 1, head_dim), in Wan's interleaved layout.
    """
    h_dim = w_dim = 2 * (head_dim // 6)
    t_dim = head_dim - h_dim - w_dim
    b, n, _ = positions.shape
    flat = positions.reshape(b * n, 3).double()
    cos_parts, sin_parts = [], []
    for axis, dim in enumerate((t_dim, h_dim, w_dim)):
        cos, sin = get_1d_rotary_pos_embed(
            dim, flat[:, axis], theta, use_real=True, repeat_interleave_real=True, freqs_dtype=torch.float64
        )
        cos_parts.append(cos)
        sin_parts.append(sin)
    cos = torch.cat(cos_parts, dim=-1).float().reshape(b, n, 1, head_dim)
    sin = torch.cat(sin_parts, dim=-1).float().reshape(b, n, 1, head_dim)
    return cos, sin


def grid_positions(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Positions of target tokens.

    Args:
        frames: (B, K) float latent frame index of each target frame (post-patch units).
    Returns:
        (B, K·height·width, 3) float positions (t, h, w), row-major like the patchifier.
    """
    b, k = frames.shape
    hh, ww = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    hw = torch.stack([hh.flatten(), ww.flatten()], dim=-1).to(frames.device)  # (h·w, 2)
    t = frames.float()[:, :, None, None].expand(b, k, height * width, 1)
    return torch.cat([t, hw[None, None].expand(b, k, -1, -1)], dim=-1).reshape(b, k * height * width, 3)


class MemoryDiT(nn.Module):
    """The DiT with a memory: `forward(noisy, frames, t, memory, text)`, `memory` a `MemoryTokens`.

    `prediction_type` "x0": the transformer predicts the clean latents and forward returns
    the velocity they imply, (x_t − x0) / t, so everything downstream sees a velocity.
    `memory_attention` "memory_only": memory tokens attend only to memory and skip the
    prompt (`memory_attention` module), so their keys and values can be computed once per
    section (`memory_keys_values`) and passed back as `memory_cache`. A memory with φ's
    features (`MemoryTokens.features`, the cross-attention enhancement) is read by every
    block's text cross-attention as well (`memory_attention.cross_attention`)."""

    def __init__(self, transformer: WanTransformer3DModel, prediction_type: str = "velocity",
                 memory_attention: str = "joint"):
        super().__init__()
        if prediction_type not in ("velocity", "x0"):
            raise FrameMemError(f"unknown prediction type '{prediction_type}' (velocity or x0)")
        if memory_attention not in MEMORY_ATTENTION:
            raise FrameMemError(f"unknown memory attention '{memory_attention}' ({' or '.join(MEMORY_ATTENTION)})")
        self.prediction_type = prediction_type
        self.memory_attention = memory_attention
        self.transformer = transformer
        cfg = transformer.config
        self.patch_size = tuple(cfg.patch_size)
        if self.patch_size[0] != 1:
            raise FrameMemError("framemem needs a temporal patch of 1 (Wan uses 1x2x2)")
        self.head_dim = cfg.attention_head_dim
        self.inner_dim = cfg.num_attention_heads * cfg.attention_head_dim
        self.text_dim = cfg.text_dim

    @classmethod
    def for_preset(cls, transformer: WanTransformer3DModel, model_config) -> "MemoryDiT":
        """The adapter with the preset's choices (`model.prediction_type`, `model.memory_attention`)."""
        return cls(transformer, model_config.prediction_type, model_config.memory_attention)

    @property
    def patch_embedding(self) -> nn.Conv3d:
        return self.transformer.patch_embedding

    def add_lora(self, rank: int, alpha: int | None = None) -> None:
        """LoRA (peft) on every attention and feed-forward projection; the rest is frozen."""
        from peft import LoraConfig

        self.transformer.requires_grad_(False)
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha or rank,
            init_lora_weights=True,
            target_modules=["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"],
        )
        self.transformer.add_adapter(config)

    def null_text(self, batch: int, tokens: int = 1) -> torch.Tensor:
        """Empty text condition (B, tokens, text_dim) of zeros, for retrieval without prompts."""
        return self.patch_embedding.weight.new_zeros(batch, tokens, self.text_dim)

    def forward(
        self,
        noisy: torch.Tensor,
        frames: torch.Tensor,
        t: torch.Tensor,
        memory: MemoryTokens | None = None,
        text: torch.Tensor | None = None,
        memory_cache: MemoryKeysValues | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity of the target frames.

        Args:
            noisy: (B, C, K, h, w) noisy target latents.
            frames: (B, K) latent frame index of each target in the history.
            t: (B, K) or (B,) flow time in [0, 1] of each target frame.
            memory: φ's clean tokens (B, M, D) with their float positions (M, 3) or
                (B, M, 3); or None.
            text: (B, L, text_dim) text embeddings; zeros when None.
            memory_cache: with `memory_attention` "memory_only", the memory's keys and
                values from `memory_keys_values` (then `memory` is not read).
        Returns:
            (B, C, K, h, w) velocity (ε − x0) for the targets only.
        """
        tr = self.transformer
        b, c, k, h, w = noisy.shape
        _, ph, pw = self.patch_size
        gh, gw = h // ph, w // pw
        if t.ndim == 1:
            t = t[:, None].expand(b, k)

        tokens = tr.patch_embedding(noisy).flatten(2).transpose(1, 2)  # (B, K·gh·gw, D)
        positions = grid_positions(frames, gh, gw)
        timesteps = t.float()[:, :, None].expand(b, k, gh * gw).reshape(b, -1)
        if text is None:
            text = self.null_text(b)
        if self.memory_attention == "memory_only":
            tokens, temb = self._targets_over_memory(tokens, positions, timesteps, text,
                                                     memory_cache or self.memory_keys_values(memory))
        elif memory_cache is not None:
            raise FrameMemError("memory_cache needs model.memory_attention = memory_only (this DiT's memory "
                                "reads the section and the prompt, so it cannot be computed once)")
        else:
            tokens, temb = self._joint(tokens, positions, timesteps, text, memory)

        shift, scale = (tr.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
        tokens = (tr.norm_out(tokens.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)).type_as(tokens)
        out = tr.proj_out(tokens)  # (B, K·gh·gw, C·ph·pw)
        out = out.reshape(b, k, gh, gw, 1, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        out = out.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if self.prediction_type == "x0":  # x_t = (1 − t)·x0 + t·ε  =>  ε − x0 = (x_t − x0) / t
            out = (noisy - out) / t.clamp(min=X0_MIN_T)[:, None, :, None, None].to(out.dtype)
        return out

    def _embed(self, timesteps: torch.Tensor, text: torch.Tensor):
        """Per-token timesteps (B, N) in [0, 1] -> temb (B, N, D), block modulation (B, N, 6, D), text states."""
        temb, proj, text_states, _ = self.transformer.condition_embedder(
            (timesteps * NUM_TRAIN_TIMESTEPS).flatten(), text, None, timestep_seq_len=timesteps.shape[1]
        )
        return temb, proj.unflatten(2, (6, -1)), text_states

    def _blocks(self, block_fn, *args):
        """Run `block_fn(block, *args)` under gradient checkpointing when training asks for it."""
        tr = self.transformer
        if torch.is_grad_enabled() and tr.gradient_checkpointing:
            return tr._gradient_checkpointing_func(block_fn, *args)
        return block_fn(*args)

    def _joint(self, tokens, positions, timesteps, text, memory):
        """[memory ; targets] through the stock blocks -> target tokens (B, K', D) and their temb."""
        b = tokens.shape[0]
        m = 0
        if memory is not None and memory.tokens.shape[1] > 0:
            m = memory.tokens.shape[1]
            mem_pos = memory.positions if memory.positions.ndim == 3 else memory.positions[None].expand(b, -1, -1)
            tokens = torch.cat([memory.tokens.to(tokens.dtype), tokens], dim=1)
            positions = torch.cat([mem_pos.to(positions), positions], dim=1)
            timesteps = torch.cat([timesteps.new_zeros(b, m), timesteps], dim=1)
        tokens = tokens.contiguous()
        rotary = rope_from_positions(positions, self.head_dim)
        temb, proj, text_states = self._embed(timesteps, text)
        features = memory.feature_keys_values() if memory is not None else None
        features = features or [(None, None)] * len(self.transformer.blocks)
        for block, (feature_k, feature_v) in zip(self.transformer.blocks, features):
            tokens = self._blocks(joint_block, block, tokens, text_states, proj, rotary, m, feature_k, feature_v)
        return tokens[:, m:], temb[:, m:]

    def _targets_over_memory(self, tokens, positions, timesteps, text, cache: MemoryKeysValues):
        """Target tokens through the blocks, reading the memory's cached keys and values."""
        rotary = rope_from_positions(positions, self.head_dim)
        temb, proj, text_states = self._embed(timesteps, text)
        features = cache.features or [(None, None)] * len(cache.keys)
        for block, keys, values, (feature_k, feature_v) in zip(self.transformer.blocks, cache.keys, cache.values, features):
            tokens = self._blocks(target_block, block, tokens, text_states, proj, rotary, keys, values,
                                  feature_k, feature_v)
        return tokens, temb

    def memory_keys_values(self, memory: MemoryTokens | None) -> MemoryKeysValues:
        """The keys and values memory tokens (B, M, D) offer every block when they attend only
        to themselves at t = 0 without a prompt (`memory_attention` "memory_only"). They do
        not depend on the targets, their t, the prompt or the guidance branch: compute them
        once per section, with the keys and values of φ's features when it has them. Empty
        memory -> zero-length keys."""
        tr = self.transformer
        weight = self.patch_embedding.weight
        heads = tr.config.num_attention_heads
        if memory is None or memory.tokens.shape[1] == 0:
            b = 1 if memory is None else memory.tokens.shape[0]
            empty = weight.new_zeros(b, 0, heads, self.head_dim)
            return MemoryKeysValues([empty] * len(tr.blocks), [empty] * len(tr.blocks))
        x = memory.tokens.to(weight.dtype).contiguous()
        b, m, _ = x.shape
        positions = memory.positions if memory.positions.ndim == 3 else memory.positions[None].expand(b, -1, -1)
        rotary = rope_from_positions(positions.float(), self.head_dim)
        _, proj, _ = self._embed(x.new_zeros(b, m, dtype=torch.float32), self.null_text(b))
        keys, values = [], []
        for i, block in enumerate(tr.blocks):
            x, k, v = self._blocks(memory_block, block, x, proj, rotary, i == len(tr.blocks) - 1)
            keys.append(k)
            values.append(v)
        return MemoryKeysValues(keys, values, memory.feature_keys_values())


def build_transformer(model_config) -> WanTransformer3DModel:
    """Random-init from the preset's kwargs, or real weights from `transformer_path`."""
    if model_config.transformer_path:
        from ..hub import load_pretrained

        transformer = load_pretrained(WanTransformer3DModel, model_config.transformer_path, "transformer")
        def as_list(value):  # configs hold patch sizes as lists or tuples
            return list(value) if isinstance(value, (list, tuple)) else [value]

        expected = {k: v for k, v in model_config.transformer.items() if k in ARCHITECTURE_KEYS}
        differ = [k for k, v in expected.items() if as_list(transformer.config[k]) != as_list(v)]
        if differ:
            text = ", ".join(f"{k} {transformer.config[k]} (preset: {expected[k]})" for k in differ)
            raise FrameMemError(f"{model_config.transformer_path}: these DiT weights do not fit the preset: {text}")
        return transformer
    kwargs = dict(model_config.transformer)
    kwargs["patch_size"] = tuple(kwargs.get("patch_size", (1, 2, 2)))
    return WanTransformer3DModel(**kwargs)
