"""ReLU: y = max(x, 0); dy/dx = 1 where y > 0 (torch's convention: 0 at x = 0)."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Layer


class ReLU(Layer):
    kind = "relu"
    # True: overwrite x instead of allocating y. The Model sets it when x is a temporary that
    # no one else holds (a linear / conv output read by this relu alone).
    inplace: bool = False

    def forward(self, x: Tensor, training: bool) -> Tensor:
        y = x.relu_() if self.inplace else torch.relu(x)
        self.y = y                       # kept: the mask is y > 0, and dead-unit health reads it
        return y

    def backward(self, dy: Tensor) -> Tensor:
        # aten's threshold_backward: dy where y > 0 else 0, one fused kernel
        dx = torch.ops.aten.threshold_backward(dy, self.y, 0)
        return dx
