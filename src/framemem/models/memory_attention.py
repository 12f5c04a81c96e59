"""How target tokens read the memory, block by block: memory read once per section
(`model.memory_attention = "memory_only"`) and the cross-attention enhancement
(`model.cross_attention`).

In the default ("joint") every DiT block runs one self-attention over [memory ; targets]
and every token reads the prompt, so the clean memory tokens change with the noisy
targets, their t, the prompt and the guidance branch: they are recomputed at every
denoising step. With "memory_only" a block's self-attention is block-causal,

    memory queries  -> memory keys            (memory never sees the targets)
    target queries  -> memory keys ; target keys

and memory tokens skip the text cross-attention. A memory token's state in every block is
then a function of the memory alone, so the keys and values it offers each block are
computed once (`memory_keys_values`) and reused by every step and both guidance branches
of a section. It is a different model from "joint" (it must be trained so); the same
checkpoint gives the same numbers with or without the reuse (tested to 1e-5).

Cross-attention enhancement (paper §4.5, Fig. 9): φ's penultimate features (B, M, F) feed
every block through IP-Adapter's decoupled cross-attention (Ye et al. 2023), the way Wan 2.1's
image-to-video blocks read CLIP features: the targets' query of the text cross-attention also
attends to keys and values projected from the features, and both outputs are added before the
output projection,

    out = to_out( attn(q, k_text, v_text) + attn(q, k_features, v_features) ).

The feature projections are φ's (`FeatureKeysValues`, saved and trained with φ) and their value
projection starts at zero, so a fresh model equals the model without them. Memory tokens do not
read the features (with "memory_only" their keys and values stay a function of memory alone).

The blocks below are diffusers' `WanTransformerBlock.forward`, taken apart: the block's own
modules (norms, projections, feed-forward) are called, only the attention is assembled here,
following `WanAttnProcessor` (q/k RMS norms across heads, Wan's interleaved rotary embedding,
scaled dot-product attention).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class MemoryKeysValues:
    """What the memory offers every block: keys and values, each a list over blocks of
    (B, M, heads, head_dim), already normalised and rotated. B is 1 for a memory shared
    by every guidance branch (it is broadcast). With the cross-attention enhancement,
    `features`: per block the (keys, values) (B, M, D) of φ's features."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    features: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def tokens(self) -> int:
        return self.keys[0].shape[1] if self.keys else 0


def _modulation(block, proj: torch.Tensor) -> list[torch.Tensor]:
    """proj (B, N, 6, D) per-token timestep projection -> six (B, N, D) shift/scale/gate terms."""
    return [p.squeeze(2) for p in (block.scale_shift_table.unsqueeze(0) + proj.float()).chunk(6, dim=2)]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved rotary embedding: x (B, N, H, d), cos/sin (B, N, 1, d)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).type_as(x)


def _project(attn, x: torch.Tensor, rotary) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, N, D) -> q, k, v (B, N, heads, head_dim) of the block's self-attention."""
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    q, k = attn.norm_q(q), attn.norm_k(k)
    q, k, v = (y.unflatten(2, (attn.heads, -1)) for y in (q, k, v))
    return _rotate(q, *rotary), _rotate(k, *rotary), v


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (B, N, H, d) over k, v (B, N', H, d) -> (B, N, H, d)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def _attend(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (B, N, H, d) over k, v (B, N', H, d) -> the attention's output projection (B, N, D)."""
    out = _sdpa(q, k, v).flatten(2, 3).type_as(q)
    return attn.to_out[1](attn.to_out[0](out))


def _feed_forward(block, x: torch.Tensor, c_shift, c_scale, c_gate) -> torch.Tensor:
    h = (block.norm3(x.float()) * (1 + c_scale) + c_shift).type_as(x)
    return (x.float() + block.ffn(h).float() * c_gate).type_as(x)


def memory_block(block, x: torch.Tensor, proj: torch.Tensor, rotary, last: bool = False):
    """One block for memory tokens x (B, M, D) attending to themselves; no prompt.
    Returns (x after the block, or None when `last`: nothing reads it), keys, values."""
    shift, scale, gate, c_shift, c_scale, c_gate = _modulation(block, proj)
    h = (block.norm1(x.float()) * (1 + scale) + shift).type_as(x)
    q, k, v = _project(block.attn1, h, rotary)
    if last:
        return None, k, v
    x = (x.float() + _attend(block.attn1, q, k, v) * gate).type_as(x)
    return _feed_forward(block, x, c_shift, c_scale, c_gate), k, v


def cross_attention(attn, x: torch.Tensor, text: torch.Tensor, feature_k: torch.Tensor | None = None,
                    feature_v: torch.Tensor | None = None, first: int = 0) -> torch.Tensor:
    """The block's text cross-attention `attn` (its attn2) for x (B, N, D), already normed;
    with φ's feature keys and values (1 or B, M, D) from `FeatureKeysValues`, the rows from
    `first` on (the targets) also attend to them, added before the output projection."""
    if feature_k is None:
        return attn(x, text, None, None)
    q = attn.norm_q(attn.to_q(x)).unflatten(2, (attn.heads, -1))
    k = attn.norm_k(attn.to_k(text)).unflatten(2, (attn.heads, -1))
    v = attn.to_v(text).unflatten(2, (attn.heads, -1))
    out = _sdpa(q, k, v)
    b = x.shape[0]
    fk, fv = (f.to(q).expand(b, -1, -1).unflatten(2, (attn.heads, -1)) for f in (feature_k, feature_v))
    out = torch.cat([out[:, :first], out[:, first:] + _sdpa(q[:, first:], fk, fv)], dim=1)
    return attn.to_out[1](attn.to_out[0](out.flatten(2, 3).type_as(q)))


def joint_block(block, x: torch.Tensor, text: torch.Tensor, proj: torch.Tensor, rotary, first: int,
                feature_k: torch.Tensor | None = None, feature_v: torch.Tensor | None = None) -> torch.Tensor:
    """diffusers' block over [memory ; targets] x (B, N, D), the rows from `first` on also
    reading φ's features (`cross_attention`); without features it is the stock block."""
    if feature_k is None:
        return block(x, text, proj, rotary)
    shift, scale, gate, c_shift, c_scale, c_gate = _modulation(block, proj)
    h = (block.norm1(x.float()) * (1 + scale) + shift).type_as(x)
    x = (x.float() + block.attn1(h, None, None, rotary) * gate).type_as(x)
    x = x + cross_attention(block.attn2, block.norm2(x.float()).type_as(x), text, feature_k, feature_v, first)
    return _feed_forward(block, x, c_shift, c_scale, c_gate)


def target_block(block, x: torch.Tensor, text: torch.Tensor, proj: torch.Tensor, rotary,
                 memory_k: torch.Tensor, memory_v: torch.Tensor, feature_k: torch.Tensor | None = None,
                 feature_v: torch.Tensor | None = None) -> torch.Tensor:
    """One block for target tokens x (B, K, D): self-attention over the memory's keys and
    values (1 or B, M, H, d) and their own, then the prompt (and φ's features, when given),
    then the feed-forward."""
    shift, scale, gate, c_shift, c_scale, c_gate = _modulation(block, proj)
    h = (block.norm1(x.float()) * (1 + scale) + shift).type_as(x)
    q, k, v = _project(block.attn1, h, rotary)
    b = x.shape[0]
    k = torch.cat([memory_k.to(k).expand(b, -1, -1, -1), k], dim=1)
    v = torch.cat([memory_v.to(v).expand(b, -1, -1, -1), v], dim=1)
    x = (x.float() + _attend(block.attn1, q, k, v) * gate).type_as(x)
    x = x + cross_attention(block.attn2, block.norm2(x.float()).type_as(x), text, feature_k, feature_v)
    return _feed_forward(block, x, c_shift, c_scale, c_gate)
