"""Conv2d and Conv1d: y[n, o] = b[o] + sum_c W[o, c] (cross-correlated with) x[n, c].

The forward is F.conv2d (F.conv1d). Its local derivatives are convolutions too:
    dx = dy convolved with W, transposed (the forward's adjoint in x): F.conv_transpose2d, the
         transposed convolution's own kernel (`conv2d_input`)
    dW = dy cross-correlated with x: torch's convolution-backward kernel, through
         torch.nn.grad.conv2d_weight
    db = sum of dy over N, H', W'
Conv1d, on (N, C, L), is the same with one spatial axis (and a dilation, which Conv2d lacks).
Each is computed only when needed, so a conv reading the model input skips dx.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv1d_weight, conv2d_weight

from ..init import init_bias, init_weight
from ..shapes import format_shape
from ..spec import pair
from .base import Layer, Shape, ShapeError


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution / pooling window along one axis (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def leftover(size: int, out: int, kernel: int, stride: int, padding: int) -> int:
    """Input rows (columns) past the last window, which floor mode drops: the transposed
    convolution's output_padding, so its output has the input's size again."""
    return size + 2 * padding - kernel - (out - 1) * stride


def conv2d_input(dy: Tensor, weight: Tensor, in_hw: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], groups: int = 1) -> Tensor:
    """dL/dx of y = conv2d(x, W) from dy (N, O, H', W'): the transposed convolution of dy with W,
    (N, C, H, W). The same numbers as torch.nn.grad.conv2d_input, which runs torch's convolution-
    backward kernel on an input-sized stand-in it first copies out: the benchmark's --tricks times both."""
    kh, kw = weight.shape[2:]
    extra = (leftover(in_hw[0], dy.shape[2], kh, stride[0], padding[0]),
             leftover(in_hw[1], dy.shape[3], kw, stride[1], padding[1]))
    return F.conv_transpose2d(dy, weight, stride=stride, padding=padding, output_padding=extra, groups=groups)


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
        # dy: (N, O, H', W')
        x, self.cache = self.cache, None                           # (N, C, H, W)
        weight = self.params["weight"]                             # (O, C, kh, kw)
        geometry = dict(stride=pair(self.spec.stride), padding=pair(self.spec.padding))
        self.grads["weight"].copy_(conv2d_weight(x, weight.shape, dy, **geometry))    # (O, C, kh, kw)
        if "bias" in self.grads:
            torch.sum(dy, (0, 2, 3), out=self.grads["bias"])       # (O,)
        if not self.need_dx:                                       # reads the model input: skip dx
            return None
        return conv2d_input(dy, weight, x.shape[2:], **geometry)   # (N, C, H, W)


def conv1d_input(dy: Tensor, weight: Tensor, length: int, stride: int, padding: int, dilation: int) -> Tensor:
    """dL/dx (N, C, L) of y = conv1d(x, W) from dy (N, O, L'): the transposed convolution of dy with W;
    output_padding gives back the input positions past the last window (as conv2d_input)."""
    span = dilation * (weight.shape[2] - 1) + 1                # the window's extent in x
    extra = leftover(length, dy.shape[2], span, stride, padding)
    return F.conv_transpose1d(dy, weight, stride=stride, padding=padding, output_padding=extra,
                              dilation=dilation)


class Conv1d(Layer):
    kind = "conv1d"

    def span(self) -> int:
        """How many input positions one window reaches: dilation * (kernel_size - 1) + 1."""
        return self.spec.dilation * (self.spec.kernel_size - 1) + 1

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        if len(shape) != 2:
            raise ShapeError(f"conv1d expects (N, C, L) input, got {format_shape(shape)}; "
                             "(N, T, D) features from an embedding have their channels last")
        c, length = shape
        p = self.spec.padding
        if self.span() > length + 2 * p:
            raise ShapeError(f"kernel {self.spec.kernel_size} (dilation {self.spec.dilation}: spans {self.span()}) "
                             f"is longer than the padded input {length + 2 * p} (input {length}, padding {p}); "
                             "use a smaller kernel_size or dilation, or more padding")
        return (self.spec.out_channels, conv_out(length, self.span(), self.spec.stride, p))

    def param_shapes(self) -> dict[str, Shape]:
        shapes = {"weight": (self.spec.out_channels, self.in_shapes[0][0], self.spec.kernel_size)}  # [out, in, k]
        if self.spec.bias:
            shapes["bias"] = (self.spec.out_channels,)
        return shapes

    def fans(self) -> tuple[int, int]:
        k = self.spec.kernel_size
        return self.in_shapes[0][0] * k, self.spec.out_channels * k

    def reset_parameters(self, init: str, gain: float, generator: torch.Generator) -> None:
        fan_in, fan_out = self.fans()
        init_weight(self.params["weight"], init, gain, fan_in, fan_out, generator)
        if "bias" in self.params:
            init_bias(self.params["bias"], init, fan_in, generator)

    def geometry(self) -> dict[str, int]:
        return dict(stride=self.spec.stride, padding=self.spec.padding, dilation=self.spec.dilation)

    def forward(self, x: Tensor, training: bool) -> Tensor:
        self.cache = x                                             # (N, C, L)
        return F.conv1d(x, self.params["weight"], self.params.get("bias"), **self.geometry())  # (N, O, L')

    def backward(self, dy: Tensor) -> Tensor | None:
        # dy: (N, O, L')
        x, self.cache = self.cache, None                           # (N, C, L)
        weight = self.params["weight"]                             # (O, C, k)
        self.grads["weight"].copy_(conv1d_weight(x, weight.shape, dy, **self.geometry()))   # (O, C, k)
        if "bias" in self.grads:
            torch.sum(dy, (0, 2), out=self.grads["bias"])          # (O,)
        if not self.need_dx:                                       # reads the model input: skip dx
            return None
        return conv1d_input(dy, weight, x.shape[2], **self.geometry())   # (N, C, L)
