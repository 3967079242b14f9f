"""What every dataset format shares: the parsed form, the error, the limits, the float32 check."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import safetensors.numpy

from engine import TASKS

Task = Literal[TASKS]  # "classification" | "regression"

MIN_ROWS = 2
MAX_INFERRED_CLASSES = 50   # default: an integer or text target with more distinct values is not inferred as labels
MAX_CLASSES = 10_000        # even when classification is asked for explicitly


class DatasetError(ValueError):
    """A dataset the service cannot use. `field`: the form field at fault; `status`: 422 or 413."""

    def __init__(self, message: str, *, field: str = "file", status: int = 422):
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


@dataclass
class Limits:
    max_rows: int = 1_000_000
    max_features: int = 1_000_000
    max_bytes: int = 100 * 1024 * 1024  # the upload limit; also of what an NPZ's arrays expand to
    max_inferred_classes: int = MAX_INFERRED_CLASSES


@dataclass
class ParsedDataset:
    format: Literal["csv", "npz"]
    X: np.ndarray                   # float32 (N, *input_shape)
    y: np.ndarray                   # int64 (N,) or float32 (N, n_outputs)
    task: Task
    n_outputs: int
    classes: list[Any] | None = None
    target: str | None = None
    feature_names: list[str] | None = None
    task_inferred: bool = False
    task_reason: str | None = None

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def input_shape(self) -> list[int]:
        return [int(d) for d in self.X.shape[1:]]

    def to_safetensors(self) -> bytes:
        return safetensors.numpy.save({"X": np.ascontiguousarray(self.X), "y": np.ascontiguousarray(self.y)},
                                      metadata={"task": self.task, "format": self.format})



def as_float32(values: np.ndarray) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """values as float32, and the index of the first value not finite there (NaN, infinity, or
    beyond ±3.4e38), or None when every value is finite."""
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    bad = ~np.isfinite(out)
    return out, (tuple(int(v) for v in np.argwhere(bad)[0]) if bad.any() else None)


def is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False
