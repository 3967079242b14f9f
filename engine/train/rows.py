"""The rows a run trains and validates on, and how an epoch walks them in batches."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from ..data import TASKS, check_finite, prepare_targets, split_indices
from ..shapes import format_shape
from ..spec import TrainConfig
from .metrics import metric_kind, ss_total

_GATHER_LIMIT_BYTES = 512 * 2**20              # gather a whole shuffled epoch at once below this


@dataclass
class Rows:
    """The run's rows on the model's device and dtype, split; targets shaped for the loss."""
    X_train: Tensor
    y_train: Tensor
    X_val: Tensor
    y_val: Tensor
    kind: str                   # metric_kind: "cross_entropy", "bce_with_logits" or "regression"
    ss_train: Tensor | None     # R^2 denominators (regression only)
    ss_val: Tensor | None

    @property
    def has_val(self) -> bool:
        return self.X_val.shape[0] > 0


def split_rows(model, loss_name: str, X: Tensor, y: Tensor, config: TrainConfig, task: str) -> Rows:
    """Check X, y and the task against the model and the loss (ValueError), then split and move them."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if X.dim() < 1 or tuple(X.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"X has shape {format_shape(X.shape, batch=False)}, the model expects "
                         f"{format_shape(model.input_shape)}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    check_finite(X, "X")
    if task == "regression":
        check_finite(y, "y")
    X = X.to(device=model.device, dtype=model.input_dtype)      # token ids stay int64
    model.check_ids(X)
    y = prepare_targets(loss_name, task, y, model.output_shape, dtype=model.dtype, device=model.device)
    train_idx, val_idx = split_indices(X.shape[0], config.validation_split, config.seed)
    if train_idx.numel() == 0:
        raise ValueError(f"validation_split {config.validation_split} leaves no training rows of {X.shape[0]}")
    train_idx, val_idx = train_idx.to(model.device), val_idx.to(model.device)
    y_train, y_val = y.index_select(0, train_idx), y.index_select(0, val_idx)
    kind = metric_kind(loss_name, task)
    regression = kind == "regression"
    return Rows(X.index_select(0, train_idx), y_train, X.index_select(0, val_idx), y_val, kind,
                 ss_total(y_train) if regression else None,
                 ss_total(y_val) if regression and val_idx.numel() else None)


def batchnorm_needs_pairs(model) -> bool:
    """True when a batchnorm would see 1 value per channel in a batch of one sample."""
    return any(layer.spec.type == "batchnorm" and math.prod(layer.in_shapes[0][1:]) == 1
               for _, layer in model.layer_items())


@dataclass
class BatchPlan:
    bounds: list[tuple[int, int]]   # (start, end) of each batch of an epoch; the last may be partial
    health_batch: int               # whose step is measured: the epoch's last full-size batch

    @classmethod
    def of(cls, model, n_train: int, batch_size: int) -> "BatchPlan":
        pairs = batchnorm_needs_pairs(model)
        if pairs and min(batch_size, n_train) < 2:
            raise ValueError(f"batchnorm on features needs at least 2 samples per batch; batch_size is "
                             f"{batch_size} and there are {n_train} training rows")
        bounds = [(lo, min(lo + batch_size, n_train)) for lo in range(0, n_train, batch_size)]
        if pairs and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
            bounds[-2:] = [(bounds[-2][0], n_train)]          # a lone last sample joins the batch before
        full_size = [b for b, (lo, hi) in enumerate(bounds) if hi - lo >= batch_size]
        return cls(bounds, full_size[-1] if full_size else 0)


def epoch_batches(rows: Rows, bounds: list[tuple[int, int]], shuffle_gen: torch.Generator | None
                   ) -> Iterator[tuple[Tensor, Tensor]]:
    """An epoch's (xb, yb). With a generator, the epoch's order is drawn first; the shuffled rows are
    gathered at once up to _GATHER_LIMIT_BYTES (batches are then slices), else batch by batch."""
    X, y = rows.X_train, rows.y_train
    if shuffle_gen is not None:
        order = torch.randperm(X.shape[0], generator=shuffle_gen).to(X.device)
        if X.numel() * X.element_size() > _GATHER_LIMIT_BYTES:
            for lo, hi in bounds:
                yield X.index_select(0, order[lo:hi]), y.index_select(0, order[lo:hi])
            return
        X, y = X.index_select(0, order), y.index_select(0, order)
    for lo, hi in bounds:
        yield X[lo:hi], y[lo:hi]
