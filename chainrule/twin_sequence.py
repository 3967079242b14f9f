"""The torch.nn twins of the sequence layers: nn.Embedding, a position table, and
nn.MultiheadAttention called as self-attention with the causal mask."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.layers.embedding import sinusoids
from engine.shapes import Shape


def sequence_module(spec, in_shape: Shape, generator: torch.Generator | None) -> nn.Module | None:
    """The torch.nn layer for a sequence layer spec, or None for another kind."""
    kind = spec.type
    if kind == "embedding":
        return nn.Embedding(spec.num_embeddings, spec.embedding_dim, padding_idx=spec.padding_idx)
    if kind == "position_embedding":
        return PositionEmbedding(spec.max_len, in_shape[-1], spec.kind)
    if kind == "self_attention":
        return SelfAttention(in_shape[-1], spec.num_heads, dropout=spec.dropout, bias=spec.bias,
                             causal=spec.causal, generator=generator)
    return None


class PositionEmbedding(nn.Module):
    """x (N, T, D) + the first T rows of a learned (max_len, D) `weight`, or of fixed sinusoids."""

    def __init__(self, max_len: int, dim: int, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "learned":
            self.weight = nn.Parameter(torch.randn(max_len, dim))
        else:   # not in the state_dict, as the engine keeps none
            self.register_buffer("table", sinusoids(max_len, dim, torch.float64, "cpu"), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        table = self.weight if self.kind == "learned" else self.table.to(x.dtype)
        return x + table[:x.shape[1]]


class SelfAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention(batch_first=True) as attn(x, x, x) with the causal mask; its parameters
    and names are MultiheadAttention's own. With a generator, training-mode dropout on the attention
    weights draws the engine's masks (written out, as MultiheadAttention's own draws from torch's RNG)."""

    def __init__(self, dim: int, heads: int, *, dropout: float, bias: bool, causal: bool,
                 generator: torch.Generator | None):
        super().__init__(dim, heads, dropout=dropout, bias=bias, batch_first=True)
        self.causal, self.generator = causal, generator

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        t = x.shape[1]
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1) if self.causal else None
        if self.training and self.dropout > 0 and self.generator is not None:
            return self._seeded_dropout_forward(x, mask)
        return super().forward(x, x, x, attn_mask=mask, need_weights=False, is_causal=self.causal)[0]

    def _seeded_dropout_forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, t, d = x.shape
        h = self.num_heads
        q, k, v = (u.view(b, t, h, d // h).transpose(1, 2)
                   for u in F.linear(x, self.in_proj_weight, self.in_proj_bias).split(d, dim=2))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // h)
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        probs = scores.softmax(-1)
        keep = torch.empty_like(probs).bernoulli_(1 - self.dropout, generator=self.generator)
        y = (probs * keep.mul_(1 / (1 - self.dropout))) @ v
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))
