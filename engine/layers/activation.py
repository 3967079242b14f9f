"""Elementwise activations and softmax; each backward is its derivative written out.

What each caches for backward (the least that gives the derivative):
  leaky_relu  y    (sign(y) = sign(x))   sigmoid  y    (y' = y (1 - y))
  tanh        y    (y' = 1 - y^2)       gelu     x and y  (Phi(x) = y / x)
  softmax     y    (dx = y * (dy - sum(dy * y)))
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..shapes import format_shape
from .base import Layer, Shape, ShapeError

_NEG_HALF_LOG2E = -0.5 / math.log(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


class LeakyReLU(Layer):
    """y = x if x > 0 else slope * x; derivative 1 or slope (slope at x = 0, as torch)."""
    kind = "leaky_relu"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        y = F.leaky_relu(x, self.spec.negative_slope)
        self.cache = y                                         # (N, ...): sign(y) = sign(x), as slope >= 0
        return y

    def backward(self, dy: Tensor) -> Tensor:
        y, self.cache = self.cache, None
        # the derivative from sign(y) in {-1, 0, 1}, clamped to [slope, 1]: {slope, slope, 1} (slope < 1);
        # float ops only (a bool mask, as in torch.where(y > 0, dy, slope * dy), runs without the CPU's
        # vector loop: the benchmark's --tricks section times both)
        return leaky_relu_derivative(y, self.spec.negative_slope, self.grad_buffer(y)).mul_(dy)


def leaky_relu_derivative(y: Tensor, slope: float, out: Tensor) -> Tensor:
    """d leaky_relu / dx at each element, from the output y (for 0 <= slope < 1), into `out` (may be y):
    1 where y > 0, else slope."""
    return torch.sign(y, out=out).clamp_(slope, 1.0)


class Sigmoid(Layer):
    kind = "sigmoid"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        y = torch.sigmoid(x)
        self.cache = y
        return y

    def backward(self, dy: Tensor) -> Tensor:
        y, self.cache = self.cache, None
        return torch.addcmul(y, y, y, value=-1, out=self.grad_buffer(y)).mul_(dy)   # sigma' = y - y^2


class Tanh(Layer):
    kind = "tanh"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        y = torch.tanh(x)
        self.cache = y
        return y

    def backward(self, dy: Tensor) -> Tensor:
        y, self.cache = self.cache, None
        one = y.new_ones(())
        return torch.addcmul(one, y, y, value=-1, out=self.grad_buffer(y)).mul_(dy)   # tanh' = 1 - tanh^2


class GELU(Layer):
    """approximate="none": x * Phi(x) (erf);  "tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Both are x times a smooth step, and the step is what the derivative needs: the forward's
    output over x (`gelu_step`), so backward reads it instead of evaluating erf or tanh again.
    """
    kind = "gelu"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        y = F.gelu(x, approximate=self.spec.approximate)
        self.cache = x, y                # y is the next layer's input, usually kept by it too
        return y

    def backward(self, dy: Tensor) -> Tensor:
        (x, y), self.cache = self.cache, None
        step = gelu_step(x, y, self.grad_buffer(y))
        if self.spec.approximate == "none":
            # d/dx x Phi(x) = Phi(x) + x phi(x),  phi(x) = e^(-x^2/2) / sqrt(2 pi) = 2^(-x^2 log2(e) / 2) / sqrt(2 pi)
            # (exp2: this CPU's exp kernel is several times slower)
            pdf = torch.mul(x, x).mul_(_NEG_HALF_LOG2E).exp2_()                     # sqrt(2 pi) phi(x)
            return step.addcmul_(x, pdf, value=_INV_SQRT_2PI).mul_(dy)
        # the step is s = (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + c x^3), so
        # d/dx x s = s + x s' = s + x * 2 s (1 - s) u',   2 u' = 2 sqrt(2/pi) (1 + 3 c x^2)
        slope = torch.mul(x, x).mul_(6 * _SQRT_2_OVER_PI * _GELU_C).add_(2 * _SQRT_2_OVER_PI).mul_(x)   # 2 x u'
        slope.addcmul_(slope, step, value=-1).add_(1)                                # 1 + 2 x u' (1 - s)
        return step.mul_(slope).mul_(dy)


def gelu_step(x: Tensor, y: Tensor, out: Tensor) -> Tensor:
    """GELU's step y / x into `out` (may be y): Phi(x) (erf form) or (1 + tanh(u)) / 2 (tanh form);
    1/2 where x = 0 (0 / 0)."""
    return torch.div(y, x, out=out).nan_to_num_(nan=0.5)


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
        # Jacobian diag(y) - y y^T along dim:  dx = y * (dy - <dy, y>) = y dy - y <dy, y>
        y, self.cache = self.cache, None
        y_dy = torch.mul(y, dy)
        return y_dy.addcmul_(y, y_dy.sum(self._dim(self.in_shapes[0]), keepdim=True), value=-1)
