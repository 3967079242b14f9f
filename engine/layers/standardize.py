"""Standardize: a fixed affine map per feature, the data's scaling carried inside the model.

    forward:   y = (x - mean) / std           backward:  dx = dy / std
    inverse:   y = x * std + mean             backward:  dx = dy * std

mean and std are buffers (C,), over dim 1 of the batch: a column of (N, D), a channel of (N, C, ...),
broadcast over the rest. They are not parameters: no gradient, no optimizer state, nothing for a
gradient check to check; they are in the state_dict (`0.mean`, `0.std`), so the weights alone
reproduce a prediction from raw inputs. A job with `preprocessing.standardize` puts one in front of
its network (inputs) and, for a regression target standardized for training, one with inverse=True
after it (core.preprocessing), so predict and the torch twin answer in the target's own units.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..shapes import format_shape
from .base import Layer, Shape, ShapeError


class Standardize(Layer):
    kind = "standardize"

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        if len(shape) < 1:
            raise ShapeError(f"standardize expects (N, C, ...) input (C features or channels), got "
                             f"{format_shape(shape)}")
        given = self.spec.mean
        if given is not None and len(given) != shape[0]:
            raise ShapeError(f"mean and std have {len(given)} values but the input {format_shape(shape)} "
                             f"has {shape[0]} features (dim 1); give one per feature")
        return shape

    @property
    def features(self) -> int:
        return self.in_shapes[0][0]

    def buffer_shapes(self) -> dict[str, tuple[Shape, torch.dtype | None]]:
        return {"mean": ((self.features,), None), "std": ((self.features,), None)}

    def reset_parameters(self, init: str, gain: float, generator: torch.Generator) -> None:
        """The spec's statistics, or mean 0 and std 1 (identity) until a state_dict brings them."""
        mean, std = self.buffers["mean"], self.buffers["std"]
        if self.spec.mean is None:
            mean.zero_()
            std.fill_(1.0)
        else:
            mean.copy_(torch.tensor(self.spec.mean, dtype=torch.float64))
            std.copy_(torch.tensor(self.spec.std, dtype=torch.float64))

    def _stats(self) -> tuple[Tensor, Tensor]:
        """mean and std shaped to broadcast over x (N, C, ...): (C, 1, ...)."""
        bc = (self.features,) + (1,) * (len(self.in_shapes[0]) - 1)
        return self.buffers["mean"].view(bc), self.buffers["std"].view(bc)

    def forward(self, x: Tensor, training: bool) -> Tensor:
        mean, std = self._stats()
        if self.spec.inverse:
            return x * std + mean                       # (N, C, ...)
        return (x - mean) / std                         # (N, C, ...)

    def backward(self, dy: Tensor) -> Tensor:
        _, std = self._stats()                          # nothing cached: the map is fixed
        return dy * std if self.spec.inverse else dy / std
