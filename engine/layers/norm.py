"""BatchNorm (1d / 2d by input rank) and LayerNorm (over the last dim), backward in closed form.

Both normalize   xhat = (x - mean) / sqrt(var + eps),  y = gamma * xhat + beta
with the biased variance, and share the short backward (CS231n), over the m values
a mean was taken of:
    dgamma = sum(dy * xhat)        dbeta = sum(dy)
    dx = gamma / (m * std) * (m * dy - sum(dy) - xhat * sum(dy * xhat))
(for BatchNorm the sums run over the batch (and H, W) per channel; for LayerNorm over the
last dim per row, with gamma inside the sums since it varies along that dim.)

Written as few passes over the activations as the formula allows: the variance is the mean
of the centred squares (two passes, as torch computes it: torch.var_mean's one-pass update is
many times slower here), x - mean is normalized in place into x-hat, the kept cache, and dx is
the closed form regrouped as one per-channel (per-row) affine map of dy and x-hat,
    dx = k * dy + p * xhat + q,   k = gamma / std,  p = -k * mean(dy * xhat),  q = -k * mean(dy)
computed in x-hat's own buffer, which backward owns once it has read it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..shapes import format_shape
from .base import Layer, Shape, ShapeError


def _affine_(t: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """t * scale + shift in place (scale and shift broadcast against t, one operand each time:
    a kernel with two broadcast operands leaves the CPU's vector loop)."""
    return t.mul_(scale).add_(shift)


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

    def _batch_stats(self, x: Tensor, dims: tuple[int, ...], bc: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
        """(x - mean, mean, biased var) of a training batch: mean, then the mean of the centred squares."""
        m = x.numel() // self.channels                # values per channel: N or N*H*W
        if m <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                             f"{list(x.shape)}; batchnorm needs a batch of at least 2 samples")
        mean = x.sum(dims).div_(m)                    # (C,)
        centred = x - mean.view(bc)                   # (N, C, ...)
        var = torch.mul(centred, centred).sum(dims).div_(m)   # (C,)
        return centred, mean, var

    def forward(self, x: Tensor, training: bool) -> Tensor:
        dims, bc = self._layout()                     # x: (N, C) or (N, C, H, W)
        if training:
            xhat, mean, var = self._batch_stats(x, dims, bc)   # xhat holds x - mean until scaled below
            inv_std = torch.rsqrt(var + self.spec.eps)         # (C,)
            xhat.mul_(inv_std.view(bc))
            m, mom = x.numel() // self.channels, self.spec.momentum   # torch: new = (1-mom) old + mom batch
            self.buffers["running_mean"].mul_(1 - mom).add_(mean, alpha=mom)
            self.buffers["running_var"].mul_(1 - mom).add_(var * (m / (m - 1)), alpha=mom)  # unbiased
            self.buffers["num_batches_tracked"].add_(1)
        else:
            inv_std = torch.rsqrt(self.buffers["running_var"] + self.spec.eps)  # (C,)
            xhat = (x - self.buffers["running_mean"].view(bc)).mul_(inv_std.view(bc))
        self.cache = xhat, inv_std, training             # (N, C, ...), (C,), batch statistics used?
        if self.spec.affine:
            return torch.mul(xhat, self.params["weight"].view(bc)).add_(self.params["bias"].view(bc))
        return xhat.clone()                              # backward overwrites x-hat with dx

    def backward(self, dy: Tensor) -> Tensor:
        dims, bc = self._layout()
        (xhat, inv_std, training), self.cache = self.cache, None
        affine = self.spec.affine
        dbeta = torch.sum(dy, dims, out=self.grads["bias"]) if affine else dy.sum(dims)       # (C,)
        dgamma = torch.mul(dy, xhat).sum(dims)                                                # (C,)
        if affine:
            self.grads["weight"].copy_(dgamma)
        k = inv_std * self.params["weight"] if affine else inv_std                           # (C,) gamma / std
        if not training:
            # running statistics are constants: y is an affine map of x
            return torch.mul(dy, k.view(bc))
        # the batch statistics depend on x too: dx = k dy + p xhat + q (module docstring), in x-hat's buffer
        m = dy.numel() // self.channels
        p, q = k * dgamma.div_(-m), k * dbeta.div(-m)                                         # (C,)
        return _affine_(xhat, p.view(bc), q.view(bc)).addcmul_(dy, k.view(bc))


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
        d = x.shape[-1]
        xhat = x - x.mean(-1, keepdim=True)                                     # (N, ..., D) centred
        # biased var = |x - mean|^2 / D per row: the norm is one pass with no squares tensor
        norm = torch.linalg.vector_norm(xhat, dim=-1, keepdim=True)             # (N, ..., 1)
        rstd = norm.square_().div_(d).add_(self.spec.eps).rsqrt_()              # (N, ..., 1)
        xhat.mul_(rstd)
        self.cache = xhat, rstd
        if self.spec.elementwise_affine:
            return torch.addcmul(self.params["bias"], xhat, self.params["weight"])
        return xhat.clone()                                                     # backward overwrites x-hat

    def backward(self, dy: Tensor) -> Tensor:
        (xhat, rstd), self.cache = self.cache, None
        d = xhat.shape[-1]
        dy_xhat = torch.mul(dy, xhat)                                           # (N, ..., D)
        if self.spec.elementwise_affine:
            # dxhat = dy * gamma; its row means, and those of dxhat * xhat, are products with gamma
            gamma = self.params["weight"]                                       # (D,)
            torch.sum(dy.reshape(-1, d), 0, out=self.grads["bias"])            # (D,) summed over rows
            torch.sum(dy_xhat.reshape(-1, d), 0, out=self.grads["weight"])     # (D,)
            mean_dxhat = torch.matmul(dy, gamma).unsqueeze_(-1).div_(d)        # (N, ..., 1)
            mean_dxhat_xhat = torch.matmul(dy_xhat, gamma).unsqueeze_(-1).div_(d)
        else:
            gamma = None
            mean_dxhat = dy.mean(-1, keepdim=True)
            mean_dxhat_xhat = dy_xhat.mean(-1, keepdim=True)
        # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), means over the last dim,
        # written into dy * xhat's buffer once its sums are taken
        dx = torch.sub(dy, mean_dxhat, out=dy_xhat) if gamma is None else \
            torch.addcmul(mean_dxhat.neg_(), dy, gamma, out=dy_xhat)
        return dx.addcmul_(xhat, mean_dxhat_xhat, value=-1).mul_(rstd)
