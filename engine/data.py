"""Data checks for training: loss / task / output compatibility, targets, the validation split.

`check_compatible` needs no tensors, so the API can call it when a job is submitted.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .shapes import format_shape
from .tasks import TASKS

CLASSIFICATION_LOSSES = ("cross_entropy", "bce_with_logits")
REGRESSION_LOSSES = ("mse", "l1", "huber")


def _loss_name(loss: Any) -> str:
    """The loss type from a LossSpec, a dict, a bare name or a loss object with `.name`."""
    if isinstance(loss, str):
        return loss
    if isinstance(loss, dict):
        return str(loss.get("type"))
    for attr in ("type", "name"):
        v = getattr(loss, attr, None)
        if isinstance(v, str):
            return v
    raise ValueError(f"cannot tell the loss type of {loss!r}")


def _values(n: int) -> str:
    return f"{n} value" + ("" if n == 1 else "s")


def check_compatible(loss_spec: Any, task: str, n_classes: int | None,
                     output_shape: Sequence[int], *, n_targets: int | None = None) -> None:
    """Raise ValueError when the loss, the task, the data and the model output do not fit together.

    loss_spec: a LossSpec (or dict / name / loss object); task: "classification" | "regression";
    n_classes: number of classes of a classification data set (labels 0..n_classes-1), None for
    regression; output_shape: the model's output shape without the batch dimension;
    n_targets: for regression, the number of target columns (1 for y of shape (N,)), if known.
    """
    name = _loss_name(loss_spec)
    out = tuple(int(d) for d in output_shape)
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if len(out) != 1:
        raise ValueError(f"the model outputs shape {format_shape(out)} but {name} needs "
                         "(N, outputs); add a flatten and a linear layer at the end")
    width = out[0]
    if task == "classification":
        if name not in CLASSIFICATION_LOSSES:
            raise ValueError(f"{name} is a regression loss; a classification task needs "
                             f"{' or '.join(CLASSIFICATION_LOSSES)}")
        if n_classes is None or n_classes < 2:
            raise ValueError(f"classification needs at least 2 classes, the data has {n_classes}")
        if name == "cross_entropy" and width != n_classes:
            raise ValueError(f"cross_entropy needs one output per class: the model outputs "
                             f"{_values(width)} per sample, the data has {n_classes} classes")
        if name == "bce_with_logits":
            if n_classes != 2:
                raise ValueError(f"bce_with_logits is for 2 classes (labels 0 and 1), the data has "
                                 f"{n_classes} classes; use cross_entropy with {n_classes} outputs")
            if width != 1:
                raise ValueError(f"bce_with_logits needs 1 output per sample (the logit of class 1), "
                                 f"the model outputs {_values(width)} per sample")
    else:
        if name not in REGRESSION_LOSSES:
            raise ValueError(f"{name} is a classification loss; a regression task needs "
                             f"{', '.join(REGRESSION_LOSSES)}")
        if n_targets is not None and width != n_targets:
            raise ValueError(f"{name} needs one output per target: the model outputs {_values(width)} "
                             f"per sample, the data has {n_targets} target"
                             + ("" if n_targets == 1 else "s") + " per sample")


def n_classes_of(y: Tensor) -> int:
    """Classes in integer labels 0..C-1 (C = max + 1); rejects negative or fractional labels."""
    if y.dim() != 1:
        raise ValueError(f"classification labels must have shape (N,), got {format_shape(y.shape, batch=False)}")
    if y.numel() == 0:
        raise ValueError("the data has no rows")
    if y.is_floating_point():
        if not torch.equal(y, torch.round(y)):
            raise ValueError("classification labels must be integers 0..C-1")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise ValueError(f"classification labels must be integers 0..C-1, found {lo}")
    return hi + 1


def prepare_targets(loss_name: str, task: str, y: Tensor, output_shape: Sequence[int],
                    *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Check compatibility and shape y for the loss: int64 (N,) for cross_entropy,
    float (N, 1) for bce_with_logits, float shaped like the output for regression losses."""
    out = tuple(output_shape)
    if task == "classification":
        check_compatible(loss_name, task, n_classes_of(y), out)
        if loss_name == "cross_entropy":
            return y.to(device=device, dtype=torch.int64)
        return y.to(device=device, dtype=dtype).reshape(-1, 1)
    if y.dim() not in (1, 2):
        raise ValueError(f"regression targets must have shape (N,) or (N, k), got "
                         f"{format_shape(y.shape, batch=False)}")
    check_compatible(loss_name, task, None, out, n_targets=1 if y.dim() == 1 else int(y.shape[1]))
    y = y.to(device=device, dtype=dtype)
    return y.reshape(-1, 1) if y.dim() == 1 else y


def check_finite(x: Tensor, what: str) -> None:
    """ValueError naming the first row with NaN / inf, so bad data is not blamed on a layer."""
    if x.is_floating_point():
        bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1) if x.dim() > 1 else ~torch.isfinite(x)
        n = int(bad.sum())
        if n:
            first = int(bad.nonzero()[0, 0])
            raise ValueError(f"{what} has NaN or infinite values in {n} row" + ("" if n == 1 else "s")
                             + f" (first: row {first})")


def split_indices(n: int, validation_split: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train_idx, val_idx): val is the last round(n * split) rows of a permutation seeded by `seed`."""
    n_val = int(round(n * validation_split))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n - n_val], perm[n - n_val:]


def standard_scaling(x: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, std) per feature of x (N, C, ...) over every other dim, float64 (C,); y (N,) is one feature.

    The population std, as sklearn's StandardScaler; a feature constant over the rows (std within
    float64 rounding of 0) gets std 1, so standardizing centres it instead of dividing by 0."""
    if x.shape[0] == 0:
        raise ValueError("no rows to compute a mean and a std from")
    rows = x.to(torch.float64).reshape(x.shape[0], x.shape[1] if x.dim() > 1 else 1, -1)   # (N, C, rest)
    std, mean = torch.std_mean(rows.transpose(0, 1).reshape(rows.shape[1], -1), dim=1, correction=0)   # (C,)
    constant = std <= 1e-12 * mean.abs().clamp_min(1.0)
    return mean, torch.where(constant, torch.ones_like(std), std)
