"""Dataset files -> arrays the engine trains on. Pure functions: a path in, a ParsedDataset out.

Every failure is a DatasetError whose message names the place (file line and column,
or array and index) and what would be valid; the route turns it into a 4xx.

Stored form (core.artifacts.dataset_relpath, safetensors):
  X  float32 (N, *input_shape), input_shape = [F] or [C, H, W]
  y  classification: int64 (N,) class ids, index into `classes` (sorted original labels)
     regression:     float32 (N, n_outputs)
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from .common import DatasetError, Limits, ParsedDataset, Task
from .from_csv import parse_csv
from .from_npz import parse_npz

_NPZ_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"

__all__ = ["DatasetError", "Limits", "ParsedDataset", "Task", "detect_format", "parse_dataset", "parse_csv",
           "parse_npz"]


def detect_format(path: Path, filename: str | None) -> Literal["csv", "npz"]:
    """By content, not by name: an NPZ is a zip archive; anything else is read as CSV text."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_NPZ_MAGIC):
        return "npz"
    if head.startswith(_NPY_MAGIC):
        raise DatasetError("the file is a single .npy array; upload an .npz holding arrays X and y "
                           "(np.savez(path, X=X, y=y))")
    if (filename or "").lower().endswith(".npz"):
        raise DatasetError(f"{filename!r} is not an NPZ archive (no zip header); save it with "
                           "np.savez(path, X=X, y=y)")
    return "csv"


def parse_dataset(path: Path, filename: str | None = None, *, target: str | None = None,
                  task: Task | None = None, limits: Limits | None = None) -> ParsedDataset:
    """Parse an upload. A DatasetError leaves without the parser's frames: they hold every array
    and label read so far, which an error kept alive (up to ~10x the file) until a full garbage
    collection found its traceback's cycle, long after the 4xx had gone out."""
    try:
        return _parse(path, filename, target, task, limits or Limits())
    except DatasetError as e:
        e.__context__ = None   # the exception it was raised from also holds the frames
        raise e.with_traceback(None) from None


def _parse(path: Path, filename: str | None, target: str | None, task: Task | None,
           limits: Limits) -> ParsedDataset:
    if path.stat().st_size == 0:
        raise DatasetError("the file is empty")
    if detect_format(path, filename) == "npz":
        if target is not None:
            raise DatasetError("`target` names a CSV column; an NPZ's target is always its array y",
                               field="target")
        return parse_npz(path, task=task, limits=limits)
    return parse_csv(path, target=target, task=task, limits=limits)
