"""Shared fixtures: a small configuration (the tiny preset with smaller numbers) and videos."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from framemem.config import get_preset
from framemem.data.procedural import procedural_video
from framemem.data.video import write_video


def small_config():
    """The tiny preset, scaled down in numbers only so tests take seconds."""
    config = get_preset("tiny")
    m, t = config.model, config.train
    m.seconds, m.fps, m.height, m.width = 4.0, 4.0, 32, 32
    m.transformer.update(num_attention_heads=2, attention_head_dim=24, text_dim=8, freq_dim=32, ffn_dim=64, num_layers=1)
    m.encoder_widths, m.encoder_attention_heads = (8, 16, 32, 32), 2
    t.steps, t.batch_size, t.targets_per_history, t.warmup_steps = 6, 2, 2, 1
    t.log_every, t.eval_every, t.checkpoint_every = 1, 1000, 2
    t.procedural_fraction = 1.0
    return config


@pytest.fixture
def config():
    return small_config()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def procedural_mp4(tmp_path):
    """Write a procedural video of `seconds` at 8 fps, 64x64, and return its path."""

    def make(seconds: float, name: str = "clip.mp4", seed: int = 7, size: int = 64):
        frames, _ = procedural_video(seed, int(seconds * 8), size, size, 8.0)
        path = tmp_path / name
        write_video(path, frames, 8.0)
        return path

    return make


def write_tiny_umt5(folder, vocab_words=("a", "ginger", "cat", "brick", "wall", "red", "square", "drifts")):
    """A tiny random umT5 encoder and a word-level tokenizer in Wan's folder layout."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *vocab_words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>") \
        .save_pretrained(folder / "tokenizer")
    torch.manual_seed(0)
    UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=32)) \
        .save_pretrained(folder / "text_encoder")
    return folder


def fit_fixed_batch(model, loss_fn, steps: int, lr: float = 2e-3) -> list[float]:
    """Train `model` on one fixed batch: `loss_fn()` returns the loss; the losses, step by step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def random_video(batch: int, frames: int, size: int) -> torch.Tensor:
    return torch.rand(batch, 3, frames, size, size) * 2 - 1


__all__ = ["small_config", "random_video", "write_tiny_umt5", "fit_fixed_batch", "np"]
