"""Text encoders behind one interface: `encoder(prompts: list[str]) -> (B, L, text_dim)`.

* `UMT5TextEncoder` — Wan's own umT5 encoder and tokenizer through transformers, from a
  local diffusers folder (`text_encoder/`, `tokenizer/`) or a hub id; frozen. Embeddings past
  each prompt's length are zeroed, as Wan's pipeline does.
* `HashedTextEncoder` — the embedded default's: words hashed into learned embeddings plus a
  learned position per word; no vocabulary file and no download, trained with the model.

An empty prompt is the unconditional input of classifier-free guidance.
"""
from __future__ import annotations

import re
import zlib

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..errors import FrameMemError
from .placement import Placement

TEXT_ENCODERS = ("hashed", "umt5")


class HashedTextEncoder(ModelMixin, ConfigMixin):
    """Words → crc32 bucket embeddings (+ position), layer-normed; padding is zero.

    Args:
        text_dim: output width (the DiT's `text_dim`). buckets: hash buckets.
        max_tokens: words kept per prompt (L).
    """

    @register_to_config
    def __init__(self, text_dim: int = 32, buckets: int = 4096, max_tokens: int = 16):
        super().__init__()
        self.words = nn.Embedding(buckets + 1, text_dim, padding_idx=0)
        self.positions = nn.Embedding(max_tokens, text_dim)
        self.norm = nn.LayerNorm(text_dim)

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """(B, L) bucket ids in [1, buckets], 0 for padding."""
        ids = torch.zeros(len(prompts), self.config.max_tokens, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            words = re.findall(r"[a-z0-9]+", prompt.lower())[: self.config.max_tokens]
            for j, word in enumerate(words):
                ids[i, j] = zlib.crc32(word.encode()) % self.config.buckets + 1
        return ids

    def forward(self, prompts: list[str]) -> torch.Tensor:
        ids = self.token_ids(prompts).to(self.words.weight.device)
        x = self.norm(self.words(ids) + self.positions.weight[None])
        return x * (ids > 0)[..., None]


class UMT5TextEncoder(Placement, nn.Module):
    """Wan's umT5-XXL (frozen). `path_or_id`: a Wan diffusers folder or hub id."""

    def __init__(self, path_or_id: str, max_tokens: int = 512, torch_dtype: torch.dtype = torch.float32):
        super().__init__()
        from transformers import AutoTokenizer, UMT5EncoderModel

        from ..hub import load_pretrained

        self.tokenizer = load_pretrained(AutoTokenizer, path_or_id, "tokenizer", weights_name=None)
        self.model = load_pretrained(UMT5EncoderModel, path_or_id, "text_encoder", weights_name="model.safetensors",
                                     torch_dtype=torch_dtype).eval().requires_grad_(False)
        self.max_tokens = max_tokens

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(prompts, padding="max_length", max_length=self.max_tokens, truncation=True,
                               add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        device = next(self.model.parameters()).device
        mask = batch.attention_mask.to(device)
        hidden = self.model(batch.input_ids.to(device), mask).last_hidden_state
        return (hidden * mask[..., None]).float()


def build_text_encoder(ar_config, text_dim: int, weights: str | None) -> nn.Module:
    """The stage-2 text encoder a config names; `weights` is the Wan folder or hub id."""
    if ar_config.text_encoder == "hashed":
        return HashedTextEncoder(text_dim=text_dim, buckets=ar_config.text_buckets, max_tokens=ar_config.text_tokens)
    if ar_config.text_encoder == "umt5":
        path = ar_config.text_encoder_path or weights
        if not path:
            raise FrameMemError("text encoder umt5 needs text_encoder_path or the Wan weights folder")
        return UMT5TextEncoder(path, ar_config.text_tokens)
    raise FrameMemError(f"unknown text encoder '{ar_config.text_encoder}' ({', '.join(TEXT_ENCODERS)})")
