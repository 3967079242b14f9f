"""Conv2d: y[n, o] = b[o] + sum_c W[o, c] (cross-correlated with) x[n, c].

The kernels are aten's (conv2d forward, convolution_backward); the wiring is ours:
forward caches the input, backward asks aten for dx, dW and db and writes dW, db
into the Model's gradient views.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..init import init_bias, init_weight
from ..shapes import format_shape
from ..spec import pair
from .base import Layer, Shape, ShapeError


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution / pooling window along one axis (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


class Conv2d(Layer):
    kind = "conv2d"

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        if len(shape) != 3:
            raise ShapeError(f"conv2d expects (N, C, H, W) input, got {format_shape(shape)}")
        c, h, w = shape
        kh, kw = pair(self.spec.kernel_size)
        sh, sw = pair(self.spec.stride)
        ph, pw = pair(self.spec.padding)
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ShapeError(f"kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw} "
                             f"(input {h}x{w}, padding {ph}x{pw}); use a smaller kernel_size or more padding")
        return (self.spec.out_channels, conv_out(h, kh, sh, ph), conv_out(w, kw, sw, pw))

    def param_shapes(self) -> dict[str, Shape]:
        kh, kw = pair(self.spec.kernel_size)
        shapes = {"weight": (self.spec.out_channels, self.in_shapes[0][0], kh, kw)}  # [out, in, kh, kw]
        if self.spec.bias:
            shapes["bias"] = (self.spec.out_channels,)
        return shapes

    def fans(self) -> tuple[int, int]:
        kh, kw = pair(self.spec.kernel_size)
        return self.in_shapes[0][0] * kh * kw, self.spec.out_channels * kh * kw

    def reset_parameters(self, init: str, gain: float, generator: torch.Generator) -> None:
        fan_in, fan_out = self.fans()
        init_weight(self.params["weight"], init, gain, fan_in, fan_out, generator)
        if "bias" in self.params:
            init_bias(self.params["bias"], init, fan_in, generator)

    def forward(self, x: Tensor, training: bool) -> Tensor:
        self.cache = x                                             # (N, C, H, W)
        return F.conv2d(x, self.params["weight"], self.params.get("bias"),
                        stride=pair(self.spec.stride), padding=pair(self.spec.padding))  # (N, O, H', W')

    def backward(self, dy: Tensor) -> Tensor | None:
        # dy: (N, O, H', W') -> dx (N, C, H, W), dW (O, C, kh, kw), db (O,) = sum of dy over N, H', W'
        # (dx is None, not computed, when need_dx is False)
        x, self.cache = self.cache, None                           # (N, C, H, W)
        has_bias = "bias" in self.grads
        dx, dw, db = torch.ops.aten.convolution_backward(
            dy, x, self.params["weight"],
            [self.spec.out_channels] if has_bias else None,
            list(pair(self.spec.stride)), list(pair(self.spec.padding)), [1, 1],  # dilation 1
            False, [0, 0], 1,                                              # not transposed, groups 1
            [self.need_dx, True, has_bias])
        self.grads["weight"].copy_(dw)
        if has_bias:
            self.grads["bias"].copy_(db)
        return dx
