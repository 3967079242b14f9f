"""Flatten dims start_dim..end_dim into one, as torch.nn.Flatten: dims count the batch dim (0)."""
from __future__ import annotations

from torch import Tensor

from ..shapes import format_shape
from .base import Layer, Shape, ShapeError


class Flatten(Layer):
    kind = "flatten"

    def _dims(self, shape: Shape) -> tuple[int, int]:
        """(start, end) resolved against the batched rank len(shape) + 1, both inclusive."""
        rank = len(shape) + 1
        start, end = self.spec.start_dim, self.spec.end_dim
        s = start + rank if start < 0 else start
        e = end + rank if end < 0 else end
        if not 1 <= s < rank:
            raise ShapeError(f"start_dim={start} is out of range for a {format_shape(shape)} input; "
                             f"valid: 1..{rank - 1} or -{rank - 1}..-1 (dim 0 is the batch)")
        if not s <= e < rank:
            raise ShapeError(f"end_dim={end} is out of range for a {format_shape(shape)} input "
                             f"with start_dim={start}; valid: {s}..{rank - 1} or {s - rank}..-1")
        return s, e

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        s, e = self._dims(shape)
        n = 1
        for d in shape[s - 1:e]:
            n *= d
        return (*shape[:s - 1], n, *shape[e:])

    def forward(self, x: Tensor, training: bool) -> Tensor:
        s, e = self._dims(self.in_shapes[0])
        return x.flatten(s, e)                              # (N, ..., prod, ...): a view when x is contiguous

    def backward(self, dy: Tensor) -> Tensor:
        return dy.reshape(dy.shape[0], *self.in_shapes[0])  # back to (N, *in_shape); nothing cached
