"""BatchNorm (1d / 2d by input rank) and LayerNorm (over the last dim), backward in closed form.

Both normalize   xhat = (x - mean) / sqrt(var + eps),  y = gamma * xhat + beta
with the biased variance, and share the short backward (CS231n), over the m values
a mean was taken of:
    dgamma = sum(dy * xhat)        dbeta = sum(dy)
    dx = gamma / (m * std) * (m * dy - sum(dy) - xhat * sum(dy * xhat))
(for BatchNorm the sums run over the batch (and H, W) per channel; for LayerNorm over the
last dim per row, with gamma inside the sums since it varies along that dim.)
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..shapes import format_shape
from .base import Layer, Shape, ShapeError


class BatchNorm(Layer):
    """BatchNorm1d on (N, C), BatchNorm2d on (N, C, H, W); running stats as torch.nn."""
    kind = "batchnorm"

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        if len(shape) not in (1, 3):
            raise ShapeError(f"batchnorm expects (N, C) or (N, C, H, W) input, "
                             f"got {format_shape(shape)}")
        return shape

    @property
    def channels(self) -> int:
        return self.in_shapes[0][0]

    def param_shapes(self) -> dict[str, Shape]:
        return {"weight": (self.channels,), "bias": (self.channels,)} if self.spec.affine else {}

    def buffer_shapes(self) -> dict[str, tuple[Shape, torch.dtype | None]]:
        return {"running_mean": ((self.channels,), None), "running_var": ((self.channels,), None),
                "num_batches_tracked": ((), torch.long)}

    def reset_parameters(self, init: str, gain: float, generator: torch.Generator) -> None:
        # torch.nn's BatchNorm init whatever the scheme: gamma = 1, beta = 0, fresh running stats
        if self.spec.affine:
            self.params["weight"].fill_(1.0)
            self.params["bias"].zero_()
        self.buffers["running_mean"].zero_()
        self.buffers["running_var"].fill_(1.0)
        self.buffers["num_batches_tracked"].zero_()

    def _layout(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(dims reduced over, shape a (C,) vector broadcasts as)."""
        return ((0,), (1, -1)) if len(self.in_shapes[0]) == 1 else ((0, 2, 3), (1, -1, 1, 1))

    def forward(self, x: Tensor, training: bool) -> Tensor:
        dims, bc = self._layout()                     # x: (N, C) or (N, C, H, W)
        if training:
            m = x.numel() // self.channels           # values per channel: N or N*H*W
            if m <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                                 f"{list(x.shape)}; batchnorm needs a batch of at least 2 samples")
            var, mean = torch.var_mean(x, dims, correction=0)      # (C,) biased, used to normalize
            inv_std = torch.rsqrt(var + self.spec.eps)             # (C,)
            xhat = (x - mean.view(bc)) * inv_std.view(bc)
            mom = self.spec.momentum                               # torch: new = (1-mom) old + mom batch
            self.buffers["running_mean"].mul_(1 - mom).add_(mean, alpha=mom)
            self.buffers["running_var"].mul_(1 - mom).add_(var * (m / (m - 1)), alpha=mom)  # unbiased
            self.buffers["num_batches_tracked"].add_(1)
        else:
            inv_std = torch.rsqrt(self.buffers["running_var"] + self.spec.eps)  # (C,)
            xhat = (x - self.buffers["running_mean"].view(bc)) * inv_std.view(bc)
        self.cache = xhat, inv_std, training             # (N, C, ...), (C,), batch statistics used?
        if self.spec.affine:
            return torch.addcmul(self.params["bias"].view(bc), xhat, self.params["weight"].view(bc))
        return xhat

    def backward(self, dy: Tensor) -> Tensor:
        dims, bc = self._layout()
        (xhat, inv_std, training), self.cache = self.cache, None
        dbeta = dy.sum(dims)                                       # (C,)
        dgamma = (dy * xhat).sum(dims)                             # (C,)
        scale = inv_std * self.params["weight"] if self.spec.affine else inv_std  # (C,)
        if training:
            # the batch statistics depend on x too: the closed form above
            m = dy.numel() // self.channels
            dx = (m * dy - dbeta.view(bc) - xhat * dgamma.view(bc)) * (scale / m).view(bc)
        else:
            # running statistics are constants: y is an affine map of x
            dx = dy * scale.view(bc)
        if self.spec.affine:
            self.grads["weight"].copy_(dgamma)
            self.grads["bias"].copy_(dbeta)
        return dx


class LayerNorm(Layer):
    """Normalizes each row over the last dim: torch.nn.LayerNorm(in_shape[-1])."""
    kind = "layernorm"

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        if len(shape) < 1:
            raise ShapeError("layernorm expects an input with at least one feature dim, got (N,)")
        return shape

    def param_shapes(self) -> dict[str, Shape]:
        d = self.in_shapes[0][-1]
        return {"weight": (d,), "bias": (d,)} if self.spec.elementwise_affine else {}

    def reset_parameters(self, init: str, gain: float, generator: torch.Generator) -> None:
        if self.spec.elementwise_affine:                 # torch.nn's init whatever the scheme
            self.params["weight"].fill_(1.0)
            self.params["bias"].zero_()

    def forward(self, x: Tensor, training: bool) -> Tensor:
        var, mean = torch.var_mean(x, -1, keepdim=True, correction=0)   # (N, ..., 1) biased
        rstd = torch.rsqrt(var + self.spec.eps)                          # (N, ..., 1)
        xhat = (x - mean) * rstd                                         # (N, ..., D)
        self.cache = xhat, rstd
        if self.spec.elementwise_affine:
            return torch.addcmul(self.params["bias"], xhat, self.params["weight"])
        return xhat

    def backward(self, dy: Tensor) -> Tensor:
        (xhat, rstd), self.cache = self.cache, None
        d = xhat.shape[-1]
        if self.spec.elementwise_affine:
            self.grads["weight"].copy_((dy * xhat).reshape(-1, d).sum(0))   # (D,) summed over rows
            self.grads["bias"].copy_(dy.reshape(-1, d).sum(0))              # (D,)
            dxhat = dy * self.params["weight"]                              # (N, ..., D)
        else:
            dxhat = dy
        # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), means over the last dim
        dx = (dxhat - dxhat.mean(-1, keepdim=True)
              - xhat * (dxhat * xhat).mean(-1, keepdim=True)) * rstd
        return dx
