"""Dataset files -> arrays the engine trains on. Pure functions: a path in, a ParsedDataset out.

Every failure is a DatasetError whose message names the place (file line and column,
or array and index) and what would be valid; the route turns it into a 4xx.

Stored form (chainrule.artifacts.dataset_relpath, safetensors):
  X  float32 (N, *input_shape), input_shape = [F] or [C, H, W]
  y  classification: int64 (N,) class ids, index into `classes` (sorted original labels)
     regression:     float32 (N, n_outputs)
"""
from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import safetensors.numpy

Task = Literal["classification", "regression"]

MIN_ROWS = 2
MAX_INFERRED_CLASSES = 50   # an integer or text target with more distinct values is not inferred as labels
MAX_CLASSES = 10_000        # even when classification is asked for explicitly
NPZ_EXPANSION_LIMIT = 4     # uncompressed arrays may be at most this many times the upload limit
_CSV_CHUNK_CELLS = 1_000_000  # text cells held at once before conversion to float64 (~60 MB of str)
_NPZ_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"


class DatasetError(ValueError):
    """A dataset the service cannot use. `field`: the form field at fault; `status`: 422 or 413."""

    def __init__(self, message: str, *, field: str = "file", status: int = 422):
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


@dataclass
class Limits:
    max_rows: int = 1_000_000
    max_features: int = 1_000_000
    max_bytes: int = 100 * 1024 * 1024  # the upload limit; bounds what an NPZ may expand to


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

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def input_shape(self) -> list[int]:
        return [int(d) for d in self.X.shape[1:]]

    def to_safetensors(self) -> bytes:
        return safetensors.numpy.save({"X": np.ascontiguousarray(self.X), "y": np.ascontiguousarray(self.y)},
                                      metadata={"task": self.task, "format": self.format})


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
    limits = limits or Limits()
    if path.stat().st_size == 0:
        raise DatasetError("the file is empty")
    if detect_format(path, filename) == "npz":
        if target is not None:
            raise DatasetError("`target` names a CSV column; an NPZ's target is always its array y",
                               field="target")
        return parse_npz(path, task=task, limits=limits)
    return parse_csv(path, target=target, task=task, limits=limits)


# ----------------------------------------------------------------------------- CSV
def _float32(values: np.ndarray) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """values as float32, and the index of the first value not finite there (NaN, infinity, or
    beyond ±3.4e38), or None when every value is finite."""
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    bad = ~np.isfinite(out)
    return out, (tuple(int(v) for v in np.argwhere(bad)[0]) if bad.any() else None)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _read_header(reader, max_columns: int) -> list[str]:
    for header in reader:
        if any(c.strip() for c in header):
            break
    else:
        raise DatasetError("the CSV has no rows; it needs a header row and at least "
                           f"{MIN_ROWS} data rows")
    if len(header) > max_columns:
        raise DatasetError(f"the header has {len(header)} columns; the limit is {max_columns} "
                           "(feature columns plus the target)", status=413)
    header = [c.strip() for c in header]
    if all(_is_number(c) for c in header):
        raise DatasetError(f"no header row: line {reader.line_num} is all numbers ({', '.join(header[:5])}"
                           f"{', ...' if len(header) > 5 else ''}); the first line must name the columns")
    seen: dict[str, int] = {}
    for j, name in enumerate(header):
        if not name:
            raise DatasetError(f"header column {j + 1} has no name; every column needs one")
        if name in seen:
            raise DatasetError(f"header: column name {name!r} appears twice (columns {seen[name] + 1} "
                               f"and {j + 1}); names must be unique")
        seen[name] = j
    if len(header) < 2:
        raise DatasetError(f"the CSV has one column ({header[0]!r}); it needs at least one feature "
                           "column and a target column")
    return header


def _to_float_chunk(rows: list[list[str]], lines: list[int], names: list[str]) -> np.ndarray:
    """Feature cells -> float64 (n, F); the first bad cell is reported by file line and column."""
    try:
        chunk = np.array(rows, dtype=np.float64)
    except ValueError:
        for row, line in zip(rows, lines):
            for cell, name in zip(row, names):
                if not _is_number(cell):
                    what = "is empty" if not cell.strip() else f"= {cell[:40]!r} is not a number"
                    raise DatasetError(f"line {line}, column {name!r}: the cell {what}; feature columns "
                                       "must be numeric (one-hot encode categories before uploading)")
        raise
    bad = ~np.isfinite(chunk)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise DatasetError(f"line {lines[i]}, column {names[j]!r}: value {rows[i][j].strip()!r} is not "
                           "finite; NaN and infinity are not allowed (drop or impute missing values)")
    return chunk


def parse_csv(path: Path, *, target: str | None = None, task: Task | None = None,
              limits: Limits | None = None) -> ParsedDataset:
    """Comma-separated UTF-8 with a header row; numeric features; the target column may hold text."""
    limits = limits or Limits()
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            reader = csv.reader(f, strict=True)
            header = _read_header(reader, limits.max_features + 1)
            if target is None:
                t = len(header) - 1
            elif target in header:
                t = header.index(target)
            else:
                raise DatasetError(f"target column {target!r} is not in the header; available columns: "
                                   f"{header}", field="target")
            names = header[:t] + header[t + 1:]
            chunk_rows = max(1, _CSV_CHUNK_CELLS // len(names))
            chunks: list[np.ndarray] = []
            labels: list[str] = []
            label_lines: list[int] = []
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != len(header):
                    raise DatasetError(f"line {reader.line_num} has {len(row)} columns; the header has "
                                       f"{len(header)}")
                if len(labels) >= limits.max_rows:
                    raise DatasetError(f"more than {limits.max_rows} data rows; the limit is "
                                       f"{limits.max_rows}", status=413)
                label = row.pop(t).strip()
                if not label:
                    raise DatasetError(f"line {reader.line_num}, column {header[t]!r}: the target cell "
                                       "is empty")
                labels.append(label)
                label_lines.append(reader.line_num)
                rows.append(row)
                lines.append(reader.line_num)
                if len(rows) == chunk_rows:
                    chunks.append(_to_float_chunk(rows, lines, names))
                    rows, lines = [], []
            if rows:
                chunks.append(_to_float_chunk(rows, lines, names))
        except UnicodeDecodeError as e:
            raise DatasetError(f"the file is not UTF-8 text (byte {e.start}: {e.reason}); upload CSV as "
                               "UTF-8, or an NPZ") from None
        except csv.Error as e:
            raise DatasetError(f"line {reader.line_num}: malformed CSV ({e})") from None
    n = len(labels)
    if n < MIN_ROWS:
        raise DatasetError(f"the CSV has {n} data row{'s' if n != 1 else ''}; at least {MIN_ROWS} are needed")
    X, bad = _float32(np.concatenate(chunks))   # cells were finite in float64; some may overflow float32
    if bad is not None:
        i, j = bad
        raise DatasetError(f"data row {i + 1}, column {names[j]!r}: value exceeds the float32 range")
    y, task, classes, n_outputs = _encode_target(labels, task, f"column {header[t]!r}",
                                                 lambda i: f"line {label_lines[i]}")
    return ParsedDataset("csv", X, y, task, n_outputs, classes, header[t], names)


# ----------------------------------------------------------------------------- target
def _encode_target(labels: list[str] | np.ndarray, task: Task | None, what: str,
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
            i = next(i for i, v in enumerate(labels) if not _is_number(str(v)))
            raise DatasetError(f"{where(i)}, target {what}: {str(labels[i])[:40]!r} is not a number; "
                               "regression needs a numeric target (or pass task=classification)",
                               field="target")
        y, bad = _float32(values)
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


# ----------------------------------------------------------------------------- NPZ
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
    X, idx = _float32(X)
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
        yy, task, classes, n_outputs = _encode_target(y.tolist() if y.dtype.kind == "U" else y, task,
                                                      "array 'y'", lambda i: f"y[{i}]")
        return ParsedDataset("npz", X, yy, task, n_outputs, classes)
    if y.ndim != 2 or y.dtype.kind == "U" or task == "classification":
        raise DatasetError(f"array 'y' has shape {y.shape} and dtype {y.dtype}; use (N,) class labels for "
                           "classification (one-hot? pass y.argmax(1)) or (N, k) numbers for regression",
                           field="file")
    yf, bad = _float32(y)
    if bad is not None:
        i, j = bad
        raise DatasetError(f"array 'y' has a non-finite value at y[{i}, {j}]")
    return ParsedDataset("npz", X, yf, "regression", int(y.shape[1]))

