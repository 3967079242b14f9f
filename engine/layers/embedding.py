"""Embedding: a table lookup, y[n, t] = W[ids[n, t]]; and position embeddings added to it.

The lookup's derivative in the table is a scatter-add (llm.c's `encoder_backward`): each
position's dy lands in the row of the id it read, so a repeated id sums its positions,
    dW[v] = sum over (n, t) with ids[n, t] = v of dy[n, t]
and the padding id's row gets no gradient (torch.nn.Embedding's padding_idx). Ids carry no
gradient: the layer reads the model input and returns no dx.

Position embeddings add a vector per position to (N, T, D): y = x + P[:T], so dx = dy and
dP[t] = sum over n of dy[n, t] (rows past T get zero).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..shapes import format_shape
from .base import Layer, Shape, ShapeError


class Embedding(Layer):
    kind = "embedding"
    # set by the Model when a linear's weight is this table (tie_to): that linear's backward runs
    # first and writes the table's gradient, so this one adds to it instead of overwriting
    accumulate: bool = False

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        return (*shape, self.spec.embedding_dim)                # ids (N, *) -> (N, *, D)

    def param_shapes(self) -> dict[str, Shape]:
        return {"weight": (self.spec.num_embeddings, self.spec.embedding_dim)}

    def fans(self) -> tuple[int, int]:
        return self.spec.embedding_dim, self.spec.num_embeddings

    def reset_parameters(self, init: str, gain: float, generator: torch.Generator) -> None:
        """N(0, init_std), N(0, 1) as nn.Embedding when absent, whatever layer reads it."""
        weight = self.params["weight"]
        weight.normal_(0.0, self.spec.init_std or 1.0, generator=generator)
        if self.spec.padding_idx is not None:
            weight[self.spec.padding_idx].zero_()

    def forward(self, x: Tensor, training: bool) -> Tensor:
        ids = x if x.dtype == torch.int64 else x.long()         # (N, *) integer ids
        self.cache = ids
        table = self.params["weight"]                           # (V, D)
        return table.index_select(0, ids.reshape(-1)).view(*ids.shape, table.shape[1])   # (N, *, D)

    def backward(self, dy: Tensor) -> None:
        ids, self.cache = self.cache, None                      # (N, *)
        dw = self.grads["weight"]                               # (V, D)
        pad = self.spec.padding_idx
        kept = dw[pad].clone() if pad is not None and self.accumulate else None
        if not self.accumulate:
            dw.zero_()
        dw.index_add_(0, ids.reshape(-1), dy.reshape(-1, dw.shape[1]))   # scatter-add of (N*T, D) rows
        if pad is not None:                                     # padding positions add nothing
            dw[pad] = 0 if kept is None else kept
        return None


def sinusoids(max_len: int, dim: int, dtype: torch.dtype, device) -> Tensor:
    """(max_len, dim): P[t, 2i] = sin(t / 10000^(2i/dim)), P[t, 2i+1] = cos(the same)."""
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)              # (L, 1)
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))  # (ceil(D/2),)
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[:dim // 2])
    return table.to(dtype=dtype, device=device)


class PositionEmbedding(Layer):
    kind = "position_embedding"

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        if len(shape) != 2:
            raise ShapeError(f"position_embedding expects (N, T, D) input, got {format_shape(shape)}; "
                             "put it after an embedding")
        if shape[0] > self.spec.max_len:
            raise ShapeError(f"the sequence has T = {shape[0]} positions but max_len is {self.spec.max_len}; "
                             f"valid: max_len >= {shape[0]}")
        return shape

    def param_shapes(self) -> dict[str, Shape]:
        if self.spec.kind != "learned":
            return {}
        return {"weight": (self.spec.max_len, self.in_shapes[0][1])}

    def reset_parameters(self, init: str, gain: float, generator: torch.Generator) -> None:
        if self.spec.kind == "learned":
            self.params["weight"].normal_(0.0, self.spec.init_std or 1.0, generator=generator)

    def table(self, t: int, like: Tensor) -> Tensor:
        """(t, D): the first t positions' vectors."""
        if self.spec.kind == "learned":
            return self.params["weight"][:t]
        cached = getattr(self, "_sinusoids", None)
        if cached is None or cached.dtype != like.dtype or cached.device != like.device:
            cached = self._sinusoids = sinusoids(self.spec.max_len, self.in_shapes[0][1], like.dtype, like.device)
        return cached[:t]

    def forward(self, x: Tensor, training: bool) -> Tensor:
        # x: (N, T, D); T may be shorter than the planned length (generation), never over max_len
        return x + self.table(x.shape[1], x)                    # (N, T, D) + (T, D)

    def backward(self, dy: Tensor) -> Tensor:
        if self.spec.kind == "learned":
            dw = self.grads["weight"]                           # (max_len, D)
            t = dy.shape[1]
            torch.sum(dy, 0, out=dw[:t])                        # (T, D)
            dw[t:].zero_()
        return dy
