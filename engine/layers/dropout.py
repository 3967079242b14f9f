"""Inverted dropout: in training y = x * mask / (1 - p), mask ~ Bernoulli(1 - p); identity in eval.

The mask is drawn with `self.generator` (set by the Model, on the model's device), so a
seeded model draws the same masks every run.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Layer


class Dropout(Layer):
    kind = "dropout"
    generator: torch.Generator | None = None

    def forward(self, x: Tensor, training: bool) -> Tensor:
        p = self.spec.p
        if not training or p == 0:
            self.cache = None                 # identity; no random draw
            return x
        keep = torch.empty_like(x).bernoulli_(1 - p, generator=self.generator)   # 1 = kept
        mask = keep.mul_(1 / (1 - p))         # (N, ...): 0 or 1/(1-p), the derivative dy/dx
        self.cache = mask
        return x * mask

    def backward(self, dy: Tensor) -> Tensor:
        mask, self.cache = self.cache, None
        return dy if mask is None else mask.mul_(dy)     # the mask is this layer's own: dx goes into it
