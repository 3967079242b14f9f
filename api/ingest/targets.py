"""The target column / array -> labels or numbers, inferring the task when it is not given."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .common import MAX_CLASSES, MAX_INFERRED_CLASSES, DatasetError, Task, as_float32, is_number


@dataclass
class Target:
    """An encoded target column / array, the task it is for, and why that task."""
    y: np.ndarray                 # int64 (N,) class ids, or float32 (N, 1)
    task: Task
    classes: list[Any] | None
    n_outputs: int
    inferred: bool                # False: the upload named the task
    reason: str


def infer_task(values: np.ndarray | None, labels, max_classes: int, what: str, where) -> tuple[Task | None, str]:
    """The task a 1-D target implies, and why; (None, why) for text that looks like an identifier.

    Classification: text with at most `max_classes` distinct values, or integers with at most
    `max_classes` distinct values and two rows per value on average. Other numbers: regression.
    """
    n = len(labels)
    if values is None:   # text labels
        k = len(set(labels))
        if k <= max_classes:
            return "classification", f"{what} holds text with {k} distinct values in {n} rows: classes"
        return None, (f"{what} holds text with {k} distinct values in {n} rows; more than the "
                      f"{max_classes} inferred as classes (an identifier, not a label?): choose another target, "
                      "or pass task=classification")
    fractional = np.floor(values) != values
    if fractional.any():
        i = int(np.argmax(fractional))
        return "regression", f"{what} holds non-integer values ({values[i]:g} at {where(i)}): regression"
    k = len(np.unique(values))
    if k > max_classes:
        return "regression", (f"{what} holds {k} distinct integers, more than the {max_classes} that are "
                              "inferred as classes: regression (pass task=classification for classes)")
    if 2 * k > n:
        return "regression", (f"{what} holds {k} distinct integers in {n} rows, fewer than two rows per "
                              "value: regression (pass task=classification for classes)")
    return "classification", (f"{what} holds {k} distinct integers in {n} rows: classes (pass "
                              "task=regression to fit them as numbers)")


def encode_target(labels: list[str] | np.ndarray, task: Task | None, what: str, where,
                  max_inferred_classes: int = MAX_INFERRED_CLASSES) -> Target:
    """1-D labels (text or numbers) -> the encoded Target, inferring the task if absent."""
    n = len(labels)
    values, numeric = _as_numbers(labels)
    inferred = task is None
    if inferred:
        task, reason = infer_task(values if numeric else None, labels, max_inferred_classes, f"target {what}",
                                  where)
        if task is None:
            raise DatasetError(reason, field="target")
    else:
        reason = f"task={task} was given with the upload"
    if task == "regression":
        if not numeric:
            i = next(i for i, v in enumerate(labels) if not is_number(str(v)))
            raise DatasetError(f"{where(i)}, target {what}: {str(labels[i])[:40]!r} is not a number; "
                               "regression needs a numeric target (or pass task=classification)",
                               field="target")
        y, bad = as_float32(values)
        if bad is not None:
            (i,) = bad
            raise DatasetError(f"{where(i)}, target {what}: {values[i]} is not finite in float32; NaN, "
                               "infinity and values beyond ±3.4e38 are not allowed", field="target")
        return Target(y.reshape(n, 1), task, None, 1, inferred, reason)
    distinct = np.unique(values) if numeric else sorted(set(labels))
    k = len(distinct)
    if k < 2:
        raise DatasetError(f"target {what} has a single class ({_label(distinct[0])!r}); classification "
                           "needs at least 2", field="target")
    if k > MAX_CLASSES:
        raise DatasetError(f"target {what} has {k} classes; the limit is {MAX_CLASSES}", field="target")
    if numeric:
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise DatasetError(f"{where(i)}, target {what}: {values[i]} is not a class label",
                               field="target")
        y = np.searchsorted(distinct, values).astype(np.int64)
    else:
        index = {label: c for c, label in enumerate(distinct)}
        y = np.fromiter((index[v] for v in labels), dtype=np.int64, count=n)
    return Target(y, task, [_label(c) for c in distinct], k, inferred, reason)


def _as_numbers(labels) -> tuple[np.ndarray | None, bool]:
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "biuf":
        return labels.astype(np.float64), True
    try:
        return np.array(labels, dtype=np.float64), True
    except ValueError:
        return None, False


def _label(v: Any) -> Any:
    """A class label as JSON: integers as int, other numbers as float, text as str."""
    if isinstance(v, (str, np.str_)):
        return str(v)
    v = float(v)
    return int(v) if v.is_integer() else v

