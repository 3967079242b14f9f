"""Merge layers: Add (residual sum) and Concat (torch.cat along a feature dim)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..shapes import format_shape
from .base import Merge, Shape, ShapeError


class Add(Merge):
    """y = x_1 + ... + x_k, all of one shape; dy/dx_i = identity."""
    kind = "add"

    def infer(self, in_shapes: list[Shape]) -> Shape:
        first = in_shapes[0]
        for i, s in enumerate(in_shapes[1:], 1):
            if s != first:
                raise ShapeError(f"add needs inputs of one shape, got input 0 {format_shape(first)} and "
                                 f"input {i} {format_shape(s)}")
        return first

    def forward(self, xs: list[Tensor], training: bool) -> Tensor:
        y = xs[0] + xs[1]                 # a new tensor, so the in-place adds below touch no input
        for x in xs[2:]:
            y += x
        return y

    def backward(self, dy: Tensor) -> list[Tensor]:
        # Every input gets dy itself: the SAME tensor object k times, no copies. This is safe
        # because no layer modifies its dy in place and the Model sums branch gradients with
        # `+` (a new tensor), never `+=`.
        return [dy] * len(self.in_shapes)


class Concat(Merge):
    """torch.cat(xs, dim): dim counts the batch dim as torch does, so 1 = features / channels."""
    kind = "concat"

    def _dim(self, in_shapes: list[Shape]) -> int:
        rank, dim = len(in_shapes[0]) + 1, self.spec.dim
        d = dim + rank if dim < 0 else dim
        if not 1 <= d < rank:
            raise ShapeError(f"concat dim={dim} is out of range for {format_shape(in_shapes[0])} inputs; "
                             f"valid: 1..{rank - 1} or -{rank - 1}..-1 (dim 0 is the batch)")
        return d

    def infer(self, in_shapes: list[Shape]) -> Shape:
        first = in_shapes[0]
        for i, s in enumerate(in_shapes[1:], 1):
            if len(s) != len(first):
                raise ShapeError(f"concat needs inputs of one rank, got input 0 {format_shape(first)} and "
                                 f"input {i} {format_shape(s)}")
        d = self._dim(in_shapes)
        for i, s in enumerate(in_shapes[1:], 1):
            if s[:d - 1] + s[d:] != first[:d - 1] + first[d:]:
                raise ShapeError(f"concat along dim {d} needs every other dim equal, got input 0 "
                                 f"{format_shape(first)} and input {i} {format_shape(s)}")
        return (*first[:d - 1], sum(s[d - 1] for s in in_shapes), *first[d:])

    def forward(self, xs: list[Tensor], training: bool) -> Tensor:
        return torch.cat(xs, self._dim(self.in_shapes))

    def backward(self, dy: Tensor) -> list[Tensor]:
        # each input's slice of dy along dim (views of dy; nothing cached)
        d = self._dim(self.in_shapes)
        return list(torch.split(dy, [s[d - 1] for s in self.in_shapes], d))
