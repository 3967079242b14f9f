"""NPZ: np.savez(path, X=X, y=y), read with allow_pickle=False."""
from __future__ import annotations

import math
import struct
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format

from .common import MIN_ROWS, DatasetError, Limits, ParsedDataset, Task, as_float32
from .targets import encode_target

MAX_MEMBERS = 64          # np.savez(path, X=X, y=y) makes 2; a few more arrays beside them are ignored
_EOCD = struct.Struct("<4s4H2LH")     # a zip's end-of-central-directory record (APPNOTE 4.3.16)
_EOCD_SIGNATURE, _EOCD_SEARCH = b"PK\x05\x06", 22 + 65535   # the record, then a comment of at most 64 KiB
# what a dtype kind is, to say why it is refused; numbers (b, i, u, f) and text (S, U) are allowed
_REFUSED_KINDS = {"c": "complex numbers", "O": "Python objects (they need pickle)", "V": "a structured or raw type",
                  "M": "dates", "m": "time spans"}


def parse_npz(path: Path, *, task: Task | None = None, limits: Limits | None = None) -> ParsedDataset:
    """np.savez(path, X=X, y=y): X (N, F) or (N, C, H, W), numeric; y (N,) labels or (N, k) targets.

    The arrays together may expand to at most the upload limit (limits.max_bytes). That is counted
    from each .npy header before its array is allocated, and exactly that many bytes are then
    read from the decompressing stream: the sizes a zip's directory declares are not trusted."""
    limits = limits or Limits()
    return _check_arrays(*read_arrays(path, limits), task, limits)


def read_arrays(path: Path, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """Arrays X and y of the archive, as saved (any numeric or text dtype), within limits.max_bytes."""
    try:
        declared = _declared_members(path)
        if declared is not None and declared > MAX_MEMBERS:
            raise DatasetError(f"the NPZ holds {declared} files; at most {MAX_MEMBERS} are read (save "
                               "np.savez(path, X=X, y=y))", status=413)
        with zipfile.ZipFile(path) as zf:
            members = {name.removesuffix(".npy"): name for name in zf.namelist()}
            if len(members) > MAX_MEMBERS:        # a directory that says fewer than it holds
                raise DatasetError(f"the NPZ holds {len(members)} files; at most {MAX_MEMBERS} are read",
                                   status=413)
            for name in ("X", "y"):
                if name not in members:
                    present = [m[:40] for m in sorted(members)[:10]] + (["..."] if len(members) > 10 else [])
                    raise DatasetError(f"the NPZ has no array {name!r}; arrays present: {present} "
                                       "(save with np.savez(path, X=X, y=y))")
            budget = [limits.max_bytes]   # bytes the arrays may still expand to
            X = _read_member(zf, members["X"], "X", budget, limits)
            y = _read_member(zf, members["y"], "y", budget, limits)
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - zlib, zipfile, numpy header errors: all a damaged upload
        raise DatasetError(f"not a readable NPZ archive ({type(e).__name__}: {e})") from None
    return X, y


def _declared_members(path: Path) -> int | None:
    """The number of files the zip's end record declares, read before the central directory is parsed
    (200,000 members took zipfile a minute to list); None where the record is not found (zipfile then
    says what is wrong). A zip64 archive (65,535 members or more) is reported as 65,535."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - _EOCD_SEARCH))
        tail = f.read()
    at = tail.rfind(_EOCD_SIGNATURE)
    if at < 0 or len(tail) - at < _EOCD.size:
        return None
    return _EOCD.unpack_from(tail, at)[4]


def _read_member(zf: zipfile.ZipFile, member: str, name: str, budget: list[int], limits: Limits) -> np.ndarray:
    """One .npy member, header first: refused before allocation when it is not an array of numbers or
    text, or would take the arrays past `budget`; the data is then read to exactly its declared size."""
    with zf.open(member) as f:
        try:
            version = npy_format.read_magic(f)
            header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, fortran_order, dtype = header(f)
        except ValueError as e:
            raise DatasetError(f"array {name!r} is not a .npy array ({e}); save the arrays with "
                               "np.savez(path, X=X, y=y)") from None
        if dtype.hasobject or dtype.kind not in "biufSU":
            kind = "O" if dtype.hasobject else dtype.kind
            what = _REFUSED_KINDS.get(kind, f"kind {kind!r}")
            raise DatasetError(f"array {name!r} has dtype {dtype} ({what}); allowed: bool, integers and floats "
                               f"(and text labels in y); save e.g. {name}.astype(np.float32)"
                               + (f" or np.abs({name}) / {name}.real" if dtype.kind == "c" else ""))
        if shape[:1] and shape[0] > limits.max_rows:
            raise DatasetError(f"array {name!r} has {shape[0]} rows; the limit is {limits.max_rows}", status=413)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > budget[0]:
            raise DatasetError(f"the NPZ expands to more than the upload limit of {limits.max_bytes} "
                               f"bytes (array {name!r}, shape {shape}, {dtype}: {nbytes} bytes)", status=413)
        budget[0] -= nbytes
        array = np.empty(shape[::-1] if fortran_order else shape, dtype=dtype)
        view, filled = memoryview(array.reshape(-1).view(np.uint8)), 0
        while filled < nbytes:
            got = f.readinto(view[filled:])
            if not got:
                raise DatasetError(f"array {name!r} is truncated: {filled} of {nbytes} bytes")
            filled += got
    return array.T if fortran_order else array


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

