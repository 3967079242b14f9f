"""ReLU: y = max(x, 0); dy/dx = 1 where y > 0 (torch's convention: 0 at x = 0)."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Layer


class ReLU(Layer):
    kind = "relu"
    # True: overwrite x instead of allocating y. The Model sets it (engine.model.inplace_relus)
    # when x is a temporary that no one else holds: a linear / conv output read by this relu alone.
    inplace: bool = False

    def forward(self, x: Tensor, training: bool) -> Tensor:
        y = x.relu_() if self.inplace else torch.relu(x)
        self.cache = y                   # (N, ...): the mask is y > 0
        return y

    def backward(self, dy: Tensor) -> Tensor:
        # aten's threshold_backward: dy where y > 0 else 0, one fused kernel
        y, self.cache = self.cache, None
        dx = torch.ops.aten.threshold_backward(dy, y, 0)
        return dx
