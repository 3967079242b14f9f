"""The target column / array -> labels or numbers, inferring the task when it is not given."""
from __future__ import annotations

from typing import Any

import numpy as np

from .common import MAX_CLASSES, MAX_INFERRED_CLASSES, DatasetError, Task, as_float32, is_number


def encode_target(labels: list[str] | np.ndarray, task: Task | None, what: str,
                   where) -> tuple[np.ndarray, Task, list[Any] | None, int]:
    """1-D labels (text or numbers) -> (y, task, classes, n_outputs), inferring the task if absent.

    Inferred classification: integer-valued numbers, or text, with at most
    MAX_INFERRED_CLASSES distinct values and at least two rows per class on average.
    """
    n = len(labels)
    values, numeric = _as_numbers(labels)
    distinct = np.unique(values) if numeric else sorted(set(labels))
    k = len(distinct)
    few = k <= MAX_INFERRED_CLASSES and 2 * k <= n
    if task is None:
        if numeric:
            integral = bool(np.all(np.floor(values) == values))
            task = "classification" if integral and few else "regression"
        elif k <= MAX_INFERRED_CLASSES or 2 * k <= n:
            task = "classification"
        else:
            raise DatasetError(f"target {what} holds text with {k} distinct values in {n} rows; that looks "
                               "like an identifier, not a label: choose another target, or pass "
                               "task=classification to use it anyway", field="target")
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
        return y.reshape(n, 1), task, None, 1
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
    return y, task, [_label(c) for c in distinct], k


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

