"""Elementwise activations and softmax; each backward is its derivative written out.

What each caches for backward (the least that gives the derivative):
  leaky_relu  bool mask x > 0           sigmoid  y    (y' = y (1 - y))
  tanh        y    (y' = 1 - y^2)       gelu     x    (the derivative needs x itself)
  softmax     y    (dx = y * (dy - sum(dy * y)))
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..shapes import format_shape
from .base import Layer, Shape, ShapeError

_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


class LeakyReLU(Layer):
    """y = x if x > 0 else slope * x; derivative 1 or slope (slope at x = 0, as torch)."""
    kind = "leaky_relu"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        positive = x > 0                                       # (N, ...) bool
        self.cache = positive
        return torch.where(positive, x, x * self.spec.negative_slope)

    def backward(self, dy: Tensor) -> Tensor:
        positive, self.cache = self.cache, None
        return torch.where(positive, dy, dy * self.spec.negative_slope)


class Sigmoid(Layer):
    kind = "sigmoid"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        y = torch.sigmoid(x)
        self.cache = y
        return y

    def backward(self, dy: Tensor) -> Tensor:
        y, self.cache = self.cache, None
        return dy * y * (1 - y)                                # sigma' = sigma (1 - sigma)


class Tanh(Layer):
    kind = "tanh"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        y = torch.tanh(x)
        self.cache = y
        return y

    def backward(self, dy: Tensor) -> Tensor:
        y, self.cache = self.cache, None
        return dy * (1 - y * y)                                # tanh' = 1 - tanh^2


class GELU(Layer):
    """approximate="none": x * Phi(x) (erf);  "tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    kind = "gelu"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        self.cache = x
        return F.gelu(x, approximate=self.spec.approximate)

    def backward(self, dy: Tensor) -> Tensor:
        x, self.cache = self.cache, None
        if self.spec.approximate == "none":
            # d/dx x Phi(x) = Phi(x) + x phi(x),  Phi = (1 + erf(x / sqrt 2)) / 2,  phi = e^(-x^2/2) / sqrt(2 pi)
            cdf = 0.5 * (1 + torch.erf(x * _INV_SQRT_2))
            pdf = torch.exp(-0.5 * x * x) * _INV_SQRT_2PI
            grad = cdf + x * pdf
        else:
            # u = sqrt(2/pi) (x + c x^3), t = tanh(u):  d/dx = (1 + t)/2 + x/2 (1 - t^2) u'(x)
            x2 = x * x
            t = torch.tanh(_SQRT_2_OVER_PI * x * (1 + _GELU_C * x2))
            du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * x2)
            grad = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du
        return dy * grad


class Softmax(Layer):
    """Softmax along `dim`, counted as torch counts it (0 = the batch, which is not allowed here)."""
    kind = "softmax"

    def _dim(self, shape: Shape) -> int:
        rank, dim = len(shape) + 1, self.spec.dim
        d = dim + rank if dim < 0 else dim
        if not 1 <= d < rank:
            raise ShapeError(f"softmax dim={dim} is out of range for a {format_shape(shape)} "
                             f"input; valid: 1..{rank - 1} or -{rank - 1}..-1 (dim 0 is the batch, "
                             "which would mix samples)")
        return d

    def infer(self, in_shapes: list[Shape]) -> Shape:
        self._dim(in_shapes[0])
        return in_shapes[0]

    def forward(self, x: Tensor, training: bool) -> Tensor:
        y = torch.softmax(x, self._dim(self.in_shapes[0]))
        self.cache = y
        return y

    def backward(self, dy: Tensor) -> Tensor:
        # Jacobian diag(y) - y y^T along dim:  dx = y * (dy - <dy, y>)
        y, self.cache = self.cache, None
        return y * (dy - (dy * y).sum(self._dim(self.in_shapes[0]), keepdim=True))
