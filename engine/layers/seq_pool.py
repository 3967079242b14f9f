"""Pooling over time: features (N, T, D) -> (N, D), the mean or the max over the T positions.

With a `padding_idx` the layer reads the token ids (N, T) too, as its second input, and pools
over the positions whose id is not padding_idx only; a row that is all padding gives 0, and
passes back a gradient of 0. Integer ids carry no gradient: the ids' dx is None, which the
Model skips (it sums only the gradients that exist).

    mean:  y[n] = sum_t keep[n, t] x[n, t] / count[n]       dx[n, t] = keep[n, t] dy[n] / count[n]
    max:   y[n, d] = x[n, t*, d], t* the first kept maximum  dx[n, t*, d] = dy[n, d], 0 elsewhere
(keep = 1 everywhere and count = T without padding_idx.)
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..shapes import format_shape
from .base import Layer, Merge, Shape, ShapeError


def mean_pool(x: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor]:
    """y (N, D) from x (N, T, D) and keep (N, T) bool or None, and the weight of each position in y,
    (N, T, 1): keep / count (1 / T without a mask)."""
    n, t, _ = x.shape
    if keep is None:
        weight = x.new_full((1, 1, 1), 1 / t).expand(n, t, 1)
    else:
        keep = keep.to(x.dtype)                                    # (N, T): 1 at tokens, 0 at padding
        count = keep.sum(1, keepdim=True).clamp_min_(1)           # (N, 1): an all-padding row divides 0 by 1
        weight = (keep / count).unsqueeze(2)                       # (N, T, 1)
    return (x * weight).sum(1), weight


def max_pool(x: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """From x (N, T, D) and keep (N, T) bool or None: y (N, D), the winning position of each (N, D) int64,
    and the all-padding rows (N,) bool (None without a mask)."""
    if keep is None:
        y, winner = x.max(1)                                       # (N, D), (N, D)
        return y, winner, None
    masked = x.masked_fill(~keep.unsqueeze(2), -torch.inf)        # (N, T, D): padding never wins
    y, winner = masked.max(1)                                      # (N, D); -inf on all-padding rows
    empty = ~keep.any(1)                                           # (N,)
    return y.masked_fill_(empty.unsqueeze(1), 0), winner, empty


def max_pool_input(dy: Tensor, winner: Tensor, empty: Tensor | None, t: int) -> Tensor:
    """dL/dx (N, T, D) from dy (N, D): each dy[n, d] scattered to its winner's row, 0 for empty rows."""
    if empty is not None:
        dy = dy.masked_fill(empty.unsqueeze(1), 0)                # a new tensor: dy itself is not touched
    n, d = dy.shape
    dx = dy.new_zeros(n, t, d)
    return dx.scatter_(1, winner.unsqueeze(1), dy.unsqueeze(1))    # (N, 1, D) into (N, T, D)


class SeqPool(Layer):
    """seq_pool without padding_idx: one input. With a padding_idx, the layer built is a MaskedSeqPool."""
    kind = "seq_pool"

    def __new__(cls, spec, in_shapes: list[Shape]):
        # a padding_idx makes it a two-input layer, which the Model runs as a merge (lists in and out)
        if cls is SeqPool and spec.padding_idx is not None:
            cls = MaskedSeqPool
        return super().__new__(cls)

    def infer(self, in_shapes: list[Shape]) -> Shape:
        shape = in_shapes[0]
        if len(shape) != 2:
            raise ShapeError(f"seq_pool expects (N, T, D) features, got {format_shape(shape)}")
        return (shape[1],)

    def pool(self, x: Tensor, keep: Tensor | None) -> Tensor:
        """y (N, D) from x (N, T, D); keeps what `unpool` needs."""
        if self.spec.mode == "mean":
            y, weight = mean_pool(x, keep)
            self.cache = weight                                    # (N, T, 1)
        else:
            y, winner, empty = max_pool(x, keep)
            self.cache = (winner, empty, x.shape[1])               # (N, D), (N,) or None, T
        return y

    def unpool(self, dy: Tensor) -> Tensor:
        """dL/dx (N, T, D) from dy (N, D)."""
        cache, self.cache = self.cache, None
        if self.spec.mode == "mean":
            return dy.unsqueeze(1) * cache                         # (N, 1, D) * (N, T, 1) -> (N, T, D)
        return max_pool_input(dy, *cache)

    def forward(self, x: Tensor, training: bool) -> Tensor:
        return self.pool(x, None)

    def backward(self, dy: Tensor) -> Tensor:
        return self.unpool(dy)


class MaskedSeqPool(SeqPool, Merge):
    """seq_pool with padding_idx: forward([features (N, T, D), ids (N, T)]) -> (N, D)."""

    def infer(self, in_shapes: list[Shape]) -> Shape:
        out = super().infer(in_shapes)
        if len(in_shapes) != 2 or in_shapes[1] != in_shapes[0][:1]:
            got = " and ".join(format_shape(s) for s in in_shapes)
            raise ShapeError(f"seq_pool with padding_idx reads features (N, T, D) and token ids (N, T) of the "
                             f"same T, got {got}")
        return out

    def forward(self, xs: list[Tensor], training: bool) -> Tensor:  # type: ignore[override]
        x, ids = xs                                                # (N, T, D), (N, T)
        return self.pool(x, ids != self.spec.padding_idx)          # keep: (N, T) bool

    def backward(self, dy: Tensor) -> list[Tensor | None]:  # type: ignore[override]
        return [self.unpool(dy), None]                             # the ids have no gradient
