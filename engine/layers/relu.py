"""ReLU: y = max(x, 0); dy/dx = 1 where y > 0 else 0 (torch's convention: 0 at x = 0)."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Layer


class ReLU(Layer):
    kind = "relu"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        y = torch.relu(x)
        self.cache = y                   # (N, ...)
        return y

    def backward(self, dy: Tensor) -> Tensor:
        y, self.cache = self.cache, None
        # 1[y > 0] is sign(y), as y >= 0: a float mask, so one float multiply (the benchmark's
        # --tricks section times the bool-mask forms torch.where(y > 0, dy, 0) and dy * (y > 0))
        return torch.sign(y, out=self.grad_buffer(y)).mul_(dy)    # (N, ...)
