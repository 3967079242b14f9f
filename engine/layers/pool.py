"""MaxPool2d and AvgPool2d on (N, C, H, W), floor mode, dilation 1, as torch.nn's defaults.

Max pooling routes each output's gradient to the input element that won its window
(aten records the winners' flat indices); average pooling spreads it evenly over the
window, counting padded zeros in the divisor (count_include_pad=True, torch's default).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..shapes import format_shape
from ..spec import pair
from .base import Layer, Shape, ShapeError
from .conv import conv_out


class _Pool2d(Layer):
    def _geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        kernel = pair(self.spec.kernel_size)
        stride = pair(self.spec.stride) if self.spec.stride is not None else kernel  # absent: kernel_size
        return kernel, stride, pair(self.spec.padding)

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        if len(shape) != 3:
            raise ShapeError(f"{self.kind} expects (N, C, H, W) input, got {format_shape(shape)}")
        c, h, w = shape
        (kh, kw), (sh, sw), (ph, pw) = self._geometry()
        if 2 * ph > kh or 2 * pw > kw:
            raise ShapeError(f"padding {ph}x{pw} must be at most half of kernel_size {kh}x{kw} "
                             f"(torch's rule: padding <= kernel_size / 2)")
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ShapeError(f"kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw} "
                             f"(input {h}x{w}, padding {ph}x{pw}); use a smaller kernel_size or more padding")
        return (c, conv_out(h, kh, sh, ph), conv_out(w, kw, sw, pw))


_CHANNELS_LAST_MIN_C = 8   # CPU forward through the channels-last kernel from this many channels up


class MaxPool2d(_Pool2d):
    kind = "maxpool2d"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        kernel, stride, padding = self._geometry()
        if x.is_cpu and x.shape[1] >= _CHANNELS_LAST_MIN_C and x.is_contiguous():
            # aten's CPU kernel vectorizes across channels only in channels-last layout: with both
            # layout copies it is still 2-4x faster from 8 channels up (measured: (64, 8, 28, 28)
            # 2.0 -> 0.67 ms, (16, 64, 56, 56) 15.7 -> 6.5 ms; 3 channels: 6.0 -> 8.5 ms, slower).
            # Same values and the same indices: positions within each (H, W) plane in any layout.
            y, indices = torch.ops.aten.max_pool2d_with_indices(
                x.contiguous(memory_format=torch.channels_last), kernel, stride, padding)
            y, indices = y.contiguous(), indices.contiguous()           # (N, C, H', W') x2
        else:
            y, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, padding)
        self.cache = x, indices         # (N, C, H, W): aten's backward reads its shape and layout
        return y

    def backward(self, dy: Tensor) -> Tensor:
        # dx[n, c, argmax of window] += dy[n, c, window]  (overlapping windows add up)
        kernel, stride, padding = self._geometry()
        (x, indices), self.cache = self.cache, None
        dx = torch.ops.aten.max_pool2d_with_indices_backward(
            dy, x, kernel, stride, padding, [1, 1], False, indices)   # (N, C, H, W)
        return dx


class AvgPool2d(_Pool2d):
    kind = "avgpool2d"

    def forward(self, x: Tensor, training: bool) -> Tensor:
        kernel, stride, padding = self._geometry()
        self.cache = x                  # (N, C, H, W): aten's backward reads its shape and layout
        return F.avg_pool2d(x, kernel, stride, padding, ceil_mode=False, count_include_pad=True)

    def backward(self, dy: Tensor) -> Tensor:
        # dx[n, c, window] += dy[n, c, out] / (kh * kw) for every window covering the element
        kernel, stride, padding = self._geometry()
        x, self.cache = self.cache, None
        dx = torch.ops.aten.avg_pool2d_backward(dy, x, kernel, stride, padding, False, True, None)
        return dx
