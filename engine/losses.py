"""Losses with hand-written gradients, matching torch.nn's losses (mean reduction).

    loss = make("cross_entropy")          # or {"type": "huber", "delta": 0.5}, or a LossSpec
    value = loss.forward(pred, target)    # 0-dim tensor; caches what backward needs
    dpred = loss.backward()               # dL/dpred, same shape as pred

No autograd: every gradient is written out, and values in forms that stay finite for
extreme inputs (log-sum-exp, stable softplus). Cross-entropy's value is a log-softmax
(`log_softmax`) and the mean of -logp at each row's label (F.nll_loss, a forward kernel);
its gradient reuses that log-softmax.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import TypeAdapter
from torch import Tensor

from .shapes import format_shape
from .spec import BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, LossSpec, MSELoss

_ADAPTER: TypeAdapter = TypeAdapter(LossSpec)
_SPEC_TYPES = (CrossEntropyLoss, MSELoss, L1Loss, HuberLoss, BCEWithLogitsLoss)


def parse(spec: Any) -> CrossEntropyLoss | MSELoss | L1Loss | HuberLoss | BCEWithLogitsLoss:
    """A LossSpec from a model, a dict or a bare type name like "mse"."""
    if isinstance(spec, _SPEC_TYPES):
        return spec
    return _ADAPTER.validate_python(spec)


class Loss:
    name: ClassVar[str]

    def __init__(self, spec: Any):
        self.spec = spec
        self._cache: tuple | None = None

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def backward(self) -> Tensor:
        """dL/dpred of the last forward (same shape as pred); frees what forward cached."""
        if self._cache is None:
            raise RuntimeError(f"{self.name} loss: backward() called without a forward() before it")
        cache, self._cache = self._cache, None
        return self._grad(*cache)

    def _grad(self, *cache: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Loss({self.spec!r})"


def _check_pred(name: str, pred: Tensor) -> None:
    if not isinstance(pred, Tensor) or not pred.is_floating_point():
        raise ValueError(f"{name} loss: pred must be a floating-point tensor, got "
                         f"{getattr(pred, 'dtype', type(pred).__name__)}")
    if pred.numel() == 0:
        raise ValueError(f"{name} loss: pred of shape {format_shape(pred.shape, batch=False)} is empty; "
                         "a batch needs at least one element")


# Cross-entropy's log-softmax is torch's fused kernel, except on the CPU for more rows than this
# of fewer classes than that: a row narrower than the kernel's vector (16 floats with AVX-512)
# is walked element by element, and the written formula's whole-tensor ops win. The benchmark's
# --tricks section times both sides of the switch.
LOG_SOFTMAX_KERNEL_MAX_ROWS = 64
LOG_SOFTMAX_KERNEL_MIN_CLASSES = 16


def short_rows_on_cpu(z: Tensor) -> bool:
    """True where `log_softmax` (the formula) beats `log_softmax_kernel` on (N, C) logits."""
    n, c = z.shape
    return z.is_cpu and n > LOG_SOFTMAX_KERNEL_MAX_ROWS and c < LOG_SOFTMAX_KERNEL_MIN_CLASSES


def log_softmax(z: Tensor) -> Tensor:
    """log softmax over dim 1 of (N, C): z - max - log sum exp(z - max), row by row, as whole-tensor ops."""
    logp = z - z.amax(dim=1, keepdim=True)                         # (N, C), max 0 per row
    logp -= logp.exp().sum(dim=1, keepdim=True).log_()             # (N, C) - (N, 1)
    return logp


def log_softmax_kernel(z: Tensor) -> Tensor:
    """`log_softmax` through torch's fused kernel: the same values up to rounding."""
    return torch.log_softmax(z, 1)


class _CrossEntropy(Loss):
    """pred (N, C) logits and target (N,) class indices in [0, C), or a sequence's (N, T, C) logits
    and (N, T) targets (each position one more row). Targets equal to ignore_index count nowhere."""
    name = "cross_entropy"

    def __init__(self, spec: CrossEntropyLoss, check_labels: bool = True):
        super().__init__(spec)
        self.check_labels = check_labels  # False skips the one host sync that finds bad labels

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pred(self.name, pred)
        if pred.dim() not in (2, 3):
            raise ValueError(f"cross_entropy loss: pred must be (N, C) or (N, T, C) logits, got shape "
                             f"{format_shape(pred.shape, batch=False)}")
        rows = pred.shape[:-1]                                      # (N,) or (N, T)
        if not isinstance(target, Tensor) or tuple(target.shape) != tuple(rows):
            raise ValueError(f"cross_entropy loss: target must be {format_shape(rows, batch=False)} class indices "
                             f"for pred of shape {format_shape(pred.shape, batch=False)}, got shape "
                             f"{format_shape(getattr(target, 'shape', ()), batch=False)}")
        shape = pred.shape
        pred, target = pred.reshape(-1, shape[-1]), target.reshape(-1)   # (M, C), (M,)
        target = self._indices(target, pred)
        eps, ignore = self.spec.label_smoothing, self.spec.ignore_index
        logp = log_softmax(pred) if short_rows_on_cpu(pred) else log_softmax_kernel(pred)   # (M, C)
        nll = F.nll_loss(logp, target, ignore_index=ignore)        # () mean over counted rows of -logp[i, t_i]
        counted = target != ignore                                 # (M,)
        if eps == 0:
            loss = nll
        else:
            smooth = -(logp.mean(dim=1) * counted).sum() / counted.sum().clamp_min(1)
            loss = (1 - eps) * nll + eps * smooth
        self._cache = (logp, target, counted, shape)
        return loss

    def _indices(self, target: Tensor, pred: Tensor) -> Tensor:
        """target as int64 on pred's device; ValueError for a label outside [0, C) (ignore_index aside)."""
        if target.dtype != torch.int64:                             # int64, the common case, is valid
            if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
                raise ValueError(f"cross_entropy loss: target must hold integer class indices, got dtype "
                                 f"{target.dtype}; valid: an integer dtype such as torch.int64")
            target = target.to(dtype=torch.int64)
        if target.device != pred.device:
            target = target.to(device=pred.device)
        if self.check_labels:
            c = pred.shape[1]
            bad = ((target < 0) | (target >= c)) & (target != self.spec.ignore_index)
            if bool(bad.any()):
                i = int(bad.nonzero()[0, 0])
                raise ValueError(f"cross_entropy loss: target[{i}] = {int(target[i])} is not a class "
                                 f"index; valid labels are 0..{c - 1} (pred has C = {c} columns)")
        return target

    def _grad(self, logp: Tensor, target: Tensor, counted: Tensor, shape: torch.Size) -> Tensor:
        # fused softmax + cross-entropy: (softmax(z) - q) / M, q = (1 - eps) onehot + eps / C, over
        # the M counted rows; an ignored row's gradient is 0
        m, c = logp.shape
        eps = self.spec.label_smoothing
        g = logp.exp_()                                            # (M, C) softmax, reusing logp
        if bool(counted.all()):                                    # the common case: no row ignored
            g.scatter_(1, target.unsqueeze(1), eps - 1, reduce="add")   # eps - 1 added at each row's target
            n = m
        else:
            g.scatter_add_(1, target.clamp(0, c - 1).unsqueeze(1), (eps - 1) * counted.unsqueeze(1).to(g.dtype))
            g.mul_(counted.unsqueeze(1))
            n = max(int(counted.sum()), 1)
        if eps != 0:
            g -= (eps / c) * counted.unsqueeze(1).to(g.dtype)
        return g.div_(n).view(shape)


class _Elementwise(Loss):
    """pred and target of identical shape; the loss is the mean over every element."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pred(self.name, pred)
        if not isinstance(target, Tensor) or tuple(target.shape) != tuple(pred.shape):
            raise ValueError(f"{self.name} loss: pred has shape {format_shape(pred.shape, batch=False)} but "
                             f"target has shape "
                             f"{format_shape(getattr(target, 'shape', ()), batch=False)}; they must be identical")
        target = target.to(device=pred.device, dtype=pred.dtype)
        value, cache = self._value(pred, target)
        self._cache = cache
        return value


class _MSE(_Elementwise):
    name = "mse"

    def _value(self, pred, target):
        d = pred - target                                          # (*)
        return (d * d).mean(), (d,)

    def _grad(self, d):
        return d.mul_(2 / d.numel())


class _L1(_Elementwise):
    name = "l1"

    def _value(self, pred, target):
        d = pred - target
        return d.abs().mean(), (d,)

    def _grad(self, d):
        return d.sign_().div_(d.numel())                           # 0 where pred == target, as torch


class _Huber(_Elementwise):
    name = "huber"

    def _value(self, pred, target):
        delta = self.spec.delta
        d = pred - target
        a = d.abs()
        per = torch.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))
        return per.mean(), (d,)

    def _grad(self, d):
        delta = self.spec.delta
        return d.clamp_(-delta, delta).div_(d.numel())


class _BCEWithLogits(_Elementwise):
    """pred: logits z, target t in [0, 1] (fractional targets allowed)."""
    name = "bce_with_logits"

    def _value(self, z, t):
        per = z.clamp(min=0) - z * t + torch.log1p(torch.exp(-z.abs()))   # stable softplus form
        return per.mean(), (z, t)

    def _grad(self, z, t):
        return torch.sigmoid(z).sub_(t).div_(z.numel())


_CLASSES: dict[str, type[Loss]] = {"cross_entropy": _CrossEntropy, "mse": _MSE, "l1": _L1,
                                   "huber": _Huber, "bce_with_logits": _BCEWithLogits}


def make(spec: Any, *, check_labels: bool = True) -> Loss:
    """A loss from a LossSpec, a dict like {"type": "huber", "delta": 2} or a bare name like "mse".

    check_labels (cross_entropy only): verify labels are in [0, C) on every forward,
    at the cost of one device-to-host sync per batch.
    """
    spec = parse(spec)
    if spec.type == "cross_entropy":
        return _CrossEntropy(spec, check_labels=check_labels)
    return _CLASSES[spec.type](spec)
