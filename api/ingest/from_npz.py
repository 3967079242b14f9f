"""NPZ: np.savez(path, X=X, y=y), read with allow_pickle=False."""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from .common import MIN_ROWS, NPZ_EXPANSION_LIMIT, DatasetError, Limits, ParsedDataset, Task, as_float32
from .targets import encode_target


def parse_npz(path: Path, *, task: Task | None = None, limits: Limits | None = None) -> ParsedDataset:
    """np.savez(path, X=X, y=y): X (N, F) or (N, C, H, W), numeric; y (N,) labels or (N, k) targets."""
    limits = limits or Limits()
    try:
        with zipfile.ZipFile(path) as zf:
            expanded = sum(i.file_size for i in zf.infolist())
    except zipfile.BadZipFile as e:
        raise DatasetError(f"not a readable NPZ archive ({e})") from None
    if expanded > NPZ_EXPANSION_LIMIT * limits.max_bytes:
        raise DatasetError(f"the NPZ expands to {expanded} bytes; the limit is "
                           f"{NPZ_EXPANSION_LIMIT * limits.max_bytes}", status=413)
    try:
        with np.load(path, allow_pickle=False) as npz:
            present = sorted(npz.files)
            for name in ("X", "y"):
                if name not in present:
                    raise DatasetError(f"the NPZ has no array {name!r}; arrays present: {present} "
                                       "(save with np.savez(path, X=X, y=y))")
            X, y = _load_member(npz, "X"), _load_member(npz, "y")
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - zlib, zipfile, numpy header errors: all a damaged upload
        raise DatasetError(f"not a readable NPZ archive ({type(e).__name__}: {e})") from None
    return _check_arrays(X, y, task, limits)


def _load_member(npz, name: str) -> np.ndarray:
    try:
        return npz[name]
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickled" in str(e):
            raise DatasetError(f"array {name!r} is an object array; object arrays are not allowed (they "
                               f"need pickle): save numbers, e.g. {name}.astype(np.float32)") from None
        raise DatasetError(f"array {name!r} cannot be read: {e}") from None


def _check_arrays(X: np.ndarray, y: np.ndarray, task: Task | None, limits: Limits) -> ParsedDataset:
    if X.dtype.kind not in "biuf":
        raise DatasetError(f"array 'X' has dtype {X.dtype}; it must be numeric (bool, int or float)")
    if X.ndim not in (2, 4):
        hint = " (use X.reshape(-1, 1) for one feature)" if X.ndim == 1 else ""
        raise DatasetError(f"array 'X' has shape {X.shape}; it must be N×F or N×C×H×W{hint}")
    n = X.shape[0]
    if n < MIN_ROWS:
        raise DatasetError(f"array 'X' has {n} rows; at least {MIN_ROWS} are needed")
    if n > limits.max_rows:
        raise DatasetError(f"array 'X' has {n} rows; the limit is {limits.max_rows}", status=413)
    per_sample = math.prod(X.shape[1:])
    if per_sample == 0 or per_sample > limits.max_features:
        raise DatasetError(f"array 'X' has {per_sample} values per sample (shape {X.shape}); it must be "
                           f"between 1 and {limits.max_features}", status=413 if per_sample else 422)
    X, idx = as_float32(X)
    if idx is not None:
        raise DatasetError(f"array 'X' has a non-finite value at X[{', '.join(map(str, idx))}] "
                           f"= {X[idx]}; NaN and infinity (and values beyond float32) are not allowed")
    if y.shape[:1] != (n,):
        raise DatasetError(f"array 'y' has shape {y.shape}; its length must equal X's {n} rows")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind == "S":
        y = np.char.decode(y, "utf-8", errors="replace")
    if y.dtype.kind not in "biufU":
        raise DatasetError(f"array 'y' has dtype {y.dtype}; it must hold numbers or text labels")
    if y.ndim == 1:
        target = encode_target(y.tolist() if y.dtype.kind == "U" else y, task, "array 'y'", lambda i: f"y[{i}]",
                               limits.max_inferred_classes)
        return ParsedDataset("npz", X, target.y, target.task, target.n_outputs, target.classes,
                             task_inferred=target.inferred, task_reason=target.reason)
    if y.ndim != 2 or y.dtype.kind == "U" or task == "classification":
        raise DatasetError(f"array 'y' has shape {y.shape} and dtype {y.dtype}; use (N,) class labels for "
                           "classification (one-hot? pass y.argmax(1)) or (N, k) numbers for regression",
                           field="file")
    yf, bad = as_float32(y)
    if bad is not None:
        i, j = bad
        raise DatasetError(f"array 'y' has a non-finite value at y[{i}, {j}]")
    reason = (f"array 'y' has {y.shape[1]} columns: regression" if task is None
              else "task=regression was given with the upload")
    return ParsedDataset("npz", X, yf, "regression", int(y.shape[1]), task_inferred=task is None,
                         task_reason=reason)

