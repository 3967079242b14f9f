"""MaxPool2d and AvgPool2d on (N, C, H, W), floor mode, dilation 1, as torch.nn's defaults.

Max pooling routes each output's gradient to the input element that won its window (the
forward records the winners' positions); average pooling spreads it evenly over the
window, counting padded zeros in the divisor (count_include_pad=True, torch's default).

Average pooling's plain forms are F.avg_pool2d and, for dx, the transposed depthwise convolution
(`avg_pool_input`); where the windows tile the input (stride = kernel, no padding, torch's default
stride) two faster forms sit beside them, tested equal in tests/engine/test_fast_formulas.py and
timed by the benchmark's --tricks: dx as dy / (kh * kw) copied over each window (`avg_pool_input_tiled`),
and the 2x2 forward as the sum of four strided views (`avg_pool_2x2`).
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


def avg_pool_input(dy: Tensor, kernel: Pair, stride: Pair, padding: Pair, in_hw: Pair) -> Tensor:
    """dL/dx (N, C, H, W) of y = avg_pool2d(x) from dy (N, C, H', W'): dx[n, c, window] += dy[n, c, out]
    / (kh * kw) for every window covering the element. The forward is a depthwise convolution with
    a constant 1 / (kh * kw) kernel, so dx is its transposed convolution."""
    (kh, kw), c = kernel, dy.shape[1]
    weight = dy.new_full((c, 1, kh, kw), 1 / (kh * kw))   # (C, 1, kh, kw): one kernel per channel
    return conv2d_input(dy, weight, in_hw, stride, padding, groups=c)


def avg_pool_input_tiled(dy: Tensor, kernel: Pair, in_hw: Pair) -> Tensor:
    """`avg_pool_input` where the windows tile the input (stride = kernel, no padding): each element
    lies in one window at most, so dx is dy / (kh * kw) copied over its window, one pass writing dx
    (the transposed convolution's time swings 1-8 ms on the benchmark's 64x32x32x32 input; this
    copy takes 2). Rows and columns past the last whole window (floor mode) get 0."""
    (kh, kw), (h, w) = kernel, in_hw
    n, c, ho, wo = dy.shape
    tiles = dy.mul(1 / (kh * kw))[:, :, :, None, :, None].expand(n, c, ho, kh, wo, kw)   # (N, C, H', kh, W', kw)
    if (ho * kh, wo * kw) == (h, w):
        return tiles.reshape(n, c, h, w)
    dx = dy.new_zeros(n, c, h, w)
    dx[:, :, :ho * kh, :wo * kw] = tiles.reshape(n, c, ho * kh, wo * kw)
    return dx


def avg_pool_2x2(x: Tensor) -> Tensor:
    """F.avg_pool2d(x, 2) (stride 2, no padding): the four strided views of each window's corners
    summed, a third of the time of torch's CPU kernel on the benchmark's input."""
    h, w = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
    y = torch.add(x[:, :, 0:h:2, 0:w:2], x[:, :, 1:h:2, 0:w:2])           # (N, C, H/2, W/2)
    return y.add_(x[:, :, 0:h:2, 1:w:2]).add_(x[:, :, 1:h:2, 1:w:2]).mul_(0.25)


class AvgPool2d(_Pool2d):
    kind = "avgpool2d"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        kernel, stride, padding = self.geometry()             # nothing cached: dx needs only dy
        if kernel == (2, 2) and tiling(kernel, stride, padding):
            return avg_pool_2x2(x)
        return F.avg_pool2d(x, kernel, stride, padding, ceil_mode=False, count_include_pad=True)

    def backward(self, dy: Tensor) -> Tensor:
        kernel, stride, padding = self.geometry()
        in_hw = self.in_shapes[0][1:]
        if tiling(kernel, stride, padding):
            return avg_pool_input_tiled(dy, kernel, in_hw)    # (N, C, H, W)
        return avg_pool_input(dy, kernel, stride, padding, in_hw)


def tiling(kernel: Pair, stride: Pair, padding: Pair) -> bool:
    """Do the windows tile the input (stride = kernel, no padding)?"""
    return stride == kernel and padding == (0, 0)
