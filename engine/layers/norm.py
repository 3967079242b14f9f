"""BatchNorm (1d / 2d by input rank) and LayerNorm (over the last dim), backward in closed form.

Both normalize   xhat = (x - mean) / sqrt(var + eps),  y = gamma * xhat + beta
with the biased variance, and share the short backward (CS231n), over the m values
a mean was taken of:
    dgamma = sum(dy * xhat)        dbeta = sum(dy)
    dx = gamma / (m * std) * (m * dy - sum(dy) - xhat * sum(dy * xhat))
(for BatchNorm the sums run over the batch (and H, W) per channel; for LayerNorm over the
last dim per row, with gamma inside the sums since it varies along that dim.)

Written as few passes over the activations as the formula allows: the statistics are sums
(torch.var_mean's one-pass update is many times slower here), x - mean is normalized in place
into x-hat, the kept cache, and dx is
the closed form regrouped as one per-channel (per-row) affine map of dy and x-hat,
    dx = k * dy + p * xhat + q,   k = gamma / std,  p = -k * mean(dy * xhat),  q = -k * mean(dy)
computed in x-hat's own buffer, which backward owns once it has read it.

Each formula is a function of tensors (`batchnorm_train_forward`, `batchnorm_backward`,
`layernorm_forward`, `layernorm_backward`); a model built with compile=True runs them through
torch.compile (engine.layers.compiled), which fuses their passes into a few loops.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..shapes import format_shape
from .base import Layer, Shape, ShapeError
from .sync_norm import batchnorm_sync_backward, batchnorm_sync_forward


def batchnorm_train_forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                            dims: tuple[int, ...], bc: tuple[int, ...]) -> tuple[Tensor, ...]:
    """(y, xhat, mean, var, inv_std) of a training batch x (N, C) or (N, C, H, W); the vectors are (C,).

    Sums of the data shifted by one sample of each channel (values near the mean, so no digits are
    lost summing them however far from zero the channel sits): mean = shift + mean(c), biased
    var = mean(c^2) - mean(c)^2 (the squares written in the buffer that then takes y), and x-hat
    = (c - mean(c)) / std in c's own buffer."""
    m = x.numel() // x.shape[1]                       # values per channel: N or N*H*W
    shift = x[0].reshape(x.shape[1], -1)[:, 0]        # (C,) the first value of each channel
    xhat = x - shift.view(bc)                         # (N, C, ...) shifted: c
    offset = xhat.sum(dims).div_(m)                   # (C,) mean(c) = mean - shift
    y = torch.mul(xhat, xhat)                         # the squares, then y
    var = y.sum(dims).div_(m).sub_(offset * offset)   # (C,) biased
    inv_std = torch.rsqrt(var + eps)                  # (C,)
    xhat.sub_(offset.view(bc)).mul_(inv_std.view(bc))
    mean = offset.add_(shift)
    if weight is None:
        return y.copy_(xhat), xhat, mean, var, inv_std
    return torch.mul(xhat, weight.view(bc), out=y).add_(bias.view(bc)), xhat, mean, var, inv_std


def batchnorm_backward(dy: Tensor, xhat: Tensor, inv_std: Tensor, weight: Tensor | None, dims: tuple[int, ...],
                       bc: tuple[int, ...], out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dgamma, dbeta) of a batch normalized with its own statistics; dx into `out` (may be x-hat).
    dx = k dy + p xhat + q per channel (module docstring)."""
    dbeta = dy.sum(dims)                                                   # (C,)
    dgamma = torch.mul(dy, xhat).sum(dims)                                 # (C,)
    k = inv_std if weight is None else inv_std * weight                    # (C,) gamma / std
    m = dy.numel() // dy.shape[1]
    p, q = k * dgamma / -m, k * dbeta / -m                                 # (C,)
    dx = torch.mul(xhat, p.view(bc), out=out).add_(q.view(bc)).addcmul_(dy, k.view(bc))
    return dx, dgamma, dbeta


def layernorm_forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """(y, xhat, rstd) of x (N, ..., D) normalized over its last dim; rstd (N, ..., 1).

    As batchnorm's, from the row shifted by its first value: c = x - x[..., :1], mean(c) and
    |c|^2 / D - mean(c)^2 (the norm: one pass, no squares tensor)."""
    d = x.shape[-1]
    xhat = x - x[..., :1]                                                   # (N, ..., D) shifted: c
    offset = xhat.mean(-1, keepdim=True)                                    # (N, ..., 1) mean(c)
    norm = torch.linalg.vector_norm(xhat, dim=-1, keepdim=True)             # (N, ..., 1)
    var = norm.square_().div_(d).sub_(offset * offset)                      # (N, ..., 1) biased
    rstd = var.add_(eps).rsqrt_()
    xhat.sub_(offset).mul_(rstd)
    return (xhat.clone() if weight is None else torch.addcmul(bias, xhat, weight)), xhat, rstd


def layernorm_backward(dy: Tensor, xhat: Tensor, rstd: Tensor, weight: Tensor | None
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dgamma, dbeta) of layernorm_forward; dgamma, dbeta (D,) summed over every row."""
    d = xhat.shape[-1]
    dy_xhat = torch.mul(dy, xhat)                                           # (N, ..., D)
    dbeta, dgamma = dy.reshape(-1, d).sum(0), dy_xhat.reshape(-1, d).sum(0)   # (D,)
    if weight is None:
        mean_dxhat = dy.mean(-1, keepdim=True)                              # (N, ..., 1)
        mean_dxhat_xhat = dy_xhat.mean(-1, keepdim=True)
        dx = torch.sub(dy, mean_dxhat, out=dy_xhat)
    else:
        # dxhat = dy * gamma; its row means, and those of dxhat * xhat, are products with gamma
        mean_dxhat = torch.matmul(dy, weight).unsqueeze_(-1).div_(d)       # (N, ..., 1)
        mean_dxhat_xhat = torch.matmul(dy_xhat, weight).unsqueeze_(-1).div_(d)
        dx = torch.addcmul(mean_dxhat.neg_(), dy, weight, out=dy_xhat)     # dxhat - mean(dxhat)
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), means over the last dim, written
    # into dy * xhat's buffer once its sums are taken
    return dx.addcmul_(xhat, mean_dxhat_xhat, value=-1).mul_(rstd), dgamma, dbeta


class BatchNorm(Layer):
    """BatchNorm1d on (N, C), BatchNorm2d on (N, C, H, W); running stats as torch.nn.

    sync: None (this process's batch), or the data-parallel side that makes training batches use
    the statistics of the global batch over all ranks (sync_norm.py; set by DataParallel)."""
    kind = "batchnorm"
    sync = None

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
        weight, bias = self.params.get("weight"), self.params.get("bias")
        if training and self.sync is not None:
            y, xhat, mean, var, inv_std, m = batchnorm_sync_forward(x, weight, bias, self.spec.eps, dims, bc,
                                                                    self.sync)
            self._track(mean, var, m)
            self.cache = xhat, inv_std, True, m          # m: the global batch's values per channel
            return y
        if training:
            m = x.numel() // self.channels           # values per channel: N or N*H*W
            if m <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                                 f"{list(x.shape)}; batchnorm needs a batch of at least 2 samples")
            y, xhat, mean, var, inv_std = self.formula(batchnorm_train_forward)(x, weight, bias, self.spec.eps,
                                                                                dims, bc)
            self._track(mean, var, m)
        else:
            inv_std = torch.rsqrt(self.buffers["running_var"] + self.spec.eps)  # (C,)
            xhat = (x - self.buffers["running_mean"].view(bc)).mul_(inv_std.view(bc))
            y = xhat.clone() if weight is None else torch.mul(xhat, weight.view(bc)).add_(bias.view(bc))
        self.cache = xhat, inv_std, training, None       # (N, C, ...), (C,), batch statistics used?, synced m
        return y

    def _track(self, mean: Tensor, var: Tensor, m: int) -> None:
        mom = self.spec.momentum                 # torch: new = (1-mom) old + mom batch
        self.buffers["running_mean"].mul_(1 - mom).add_(mean, alpha=mom)
        self.buffers["running_var"].mul_(1 - mom).add_(var * (m / (m - 1)), alpha=mom)  # unbiased
        self.buffers["num_batches_tracked"].add_(1)

    def backward(self, dy: Tensor) -> Tensor:
        dims, bc = self._layout()
        (xhat, inv_std, training, synced_m), self.cache = self.cache, None
        weight = self.params.get("weight")
        if synced_m is not None:                     # the statistics of the global batch over the ranks
            dx, dgamma, dbeta = batchnorm_sync_backward(dy, xhat, inv_std, weight, dims, bc, synced_m, self.sync)
        elif training:
            # the batch statistics depend on x too: the closed form, in x-hat's buffer (eager)
            out = None if self.compile else xhat
            dx, dgamma, dbeta = self.formula(batchnorm_backward)(dy, xhat, inv_std, weight, dims, bc, out)
        else:
            # running statistics are constants: y is an affine map of x
            k = inv_std if weight is None else inv_std * weight
            dx, dgamma, dbeta = torch.mul(dy, k.view(bc)), torch.mul(dy, xhat).sum(dims), dy.sum(dims)
        if weight is not None:
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
        y, xhat, rstd = self.formula(layernorm_forward)(x, self.params.get("weight"), self.params.get("bias"),
                                                        self.spec.eps)
        self.cache = xhat, rstd
        return y

    def backward(self, dy: Tensor) -> Tensor:
        (xhat, rstd), self.cache = self.cache, None
        dx, dgamma, dbeta = self.formula(layernorm_backward)(dy, xhat, rstd, self.params.get("weight"))
        if self.spec.elementwise_affine:
            self.grads["weight"].copy_(dgamma)
            self.grads["bias"].copy_(dbeta)
        return dx
