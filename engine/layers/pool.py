"""MaxPool2d and AvgPool2d on (N, C, H, W), floor mode, dilation 1, as torch.nn's defaults.

Max pooling routes each output's gradient to the input element that won its window (the
forward records the winners' positions); average pooling spreads it evenly over the
window, counting padded zeros in the divisor (count_include_pad=True, torch's default).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..shapes import format_shape
from ..spec import pair
from .base import Layer, Shape, ShapeError
from .conv import conv2d_input, conv_out

Pair = tuple[int, int]

# The channels-last max pool (see max_pool_channels_last) from this many channels up, on the CPU;
# the benchmark's --tricks section measures both sides of it.
CHANNELS_LAST_MIN_CHANNELS = 8


class _Pool2d(Layer):
    def geometry(self) -> tuple[Pair, Pair, Pair]:
        """(kernel, stride, padding), each (h, w); stride absent in the spec: kernel_size, as torch."""
        kernel = pair(self.spec.kernel_size)
        stride = pair(self.spec.stride) if self.spec.stride is not None else kernel
        return kernel, stride, pair(self.spec.padding)

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        if len(shape) != 3:
            raise ShapeError(f"{self.kind} expects (N, C, H, W) input, got {format_shape(shape)}")
        c, h, w = shape
        (kh, kw), (sh, sw), (ph, pw) = self.geometry()
        if 2 * ph > kh or 2 * pw > kw:
            raise ShapeError(f"padding {ph}x{pw} must be at most half of kernel_size {kh}x{kw} "
                             f"(torch's rule: padding <= kernel_size / 2)")
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ShapeError(f"kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw} "
                             f"(input {h}x{w}, padding {ph}x{pw}); use a smaller kernel_size or more padding")
        return (c, conv_out(h, kh, sh, ph), conv_out(w, kw, sw, pw))


def max_pool(x: Tensor, kernel: Pair, stride: Pair, padding: Pair) -> tuple[Tensor, Tensor]:
    """y (N, C, H', W') and, for each output, the flat position in its (H, W) plane of the window's max."""
    return F.max_pool2d(x, kernel, stride=stride, padding=padding, return_indices=True)


def max_pool_channels_last(x: Tensor, kernel: Pair, stride: Pair, padding: Pair) -> tuple[Tensor, Tensor]:
    """`max_pool`, the same values and indices (ties included), through the CPU kernel that vectorizes
    across channels: it runs only on channels-last tensors, so x goes there and y, indices come back.
    Positions within an (H, W) plane do not depend on the layout."""
    y, indices = max_pool(x.contiguous(memory_format=torch.channels_last), kernel, stride, padding)
    return y.contiguous(), indices.contiguous()


class MaxPool2d(_Pool2d):
    kind = "maxpool2d"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        if x.is_cpu and x.shape[1] >= CHANNELS_LAST_MIN_CHANNELS and x.is_contiguous():
            y, indices = max_pool_channels_last(x, *self.geometry())
        else:
            y, indices = max_pool(x, *self.geometry())
        self.cache = indices                                  # (N, C, H', W') int64
        return y

    def backward(self, dy: Tensor) -> Tensor:
        # dx[n, c, winner of window] += dy[n, c, window]: a scatter-add, as windows may overlap
        indices, self.cache = self.cache, None                # (N, C, H', W')
        c, h, w = self.in_shapes[0]
        dx = dy.new_zeros(dy.shape[0], c, h * w)              # (N, C, H*W)
        dx.scatter_add_(2, indices.flatten(2), dy.flatten(2))  # (N, C, H'*W') into (N, C, H*W)
        return dx.view(dy.shape[0], c, h, w)


class AvgPool2d(_Pool2d):
    kind = "avgpool2d"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        kernel, stride, padding = self.geometry()             # nothing cached: dx needs only dy
        return F.avg_pool2d(x, kernel, stride, padding, ceil_mode=False, count_include_pad=True)

    def backward(self, dy: Tensor) -> Tensor:
        # dx[n, c, window] += dy[n, c, out] / (kh * kw) for every window covering the element: the
        # forward is a depthwise convolution with a constant 1 / (kh * kw) kernel, so dx is its
        # transposed convolution
        (kh, kw), stride, padding = self.geometry()
        c, h, w = self.in_shapes[0]
        weight = dy.new_full((c, 1, kh, kw), 1 / (kh * kw))   # (C, 1, kh, kw): one kernel per channel
        return conv2d_input(dy, weight, (h, w), stride, padding, groups=c)   # (N, C, H, W)
