"""CSV: UTF-8 text with a header row, numeric feature columns, a target column that may hold text."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .common import MIN_ROWS, DatasetError, Limits, ParsedDataset, Task, as_float32, is_number
from .targets import encode_target

MAX_COLUMN_NAME = 200         # characters: the target's name is stored in a column of this width
_CSV_CHUNK_CELLS = 250_000    # text cells held at once before conversion (~15 MB of str objects)


def read_header(reader, max_columns: int) -> list[str]:
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
    if all(is_number(c) for c in header):
        raise DatasetError(f"no header row: line {reader.line_num} is all numbers ({', '.join(header[:5])}"
                           f"{', ...' if len(header) > 5 else ''}); the first line must name the columns")
    seen: dict[str, int] = {}
    for j, name in enumerate(header):
        if not name:
            raise DatasetError(f"header column {j + 1} has no name; every column needs one")
        if len(name) > MAX_COLUMN_NAME:
            raise DatasetError(f"header column {j + 1} has a name of {len(name)} characters ({name[:40]!r}...); "
                               f"at most {MAX_COLUMN_NAME}")
        if name in seen:
            raise DatasetError(f"header: column name {name!r} appears twice (columns {seen[name] + 1} "
                               f"and {j + 1}); names must be unique")
        seen[name] = j
    if len(header) < 2:
        raise DatasetError(f"the CSV has one column ({header[0]!r}); it needs at least one feature "
                           "column and a target column")
    return header


def _to_float_chunk(rows: list[list[str]], lines: list[int], names: list[str]) -> np.ndarray:
    """Feature cells -> float32 (n, F); the first bad cell is reported by file line and column."""
    try:
        chunk = np.array(rows, dtype=np.float64)
    except ValueError:
        for row, line in zip(rows, lines):
            for cell, name in zip(row, names):
                if not is_number(cell):
                    what = "is empty" if not cell.strip() else f"= {cell[:40]!r} is not a number"
                    text = "" if not cell.strip() else f"; a column of text to classify: text_column={name!r}"
                    raise DatasetError(f"line {line}, column {name!r}: the cell {what}; feature columns "
                                       f"must be numeric (one-hot encode categories before uploading{text})")
        raise
    bad = ~np.isfinite(chunk)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise DatasetError(f"line {lines[i]}, column {names[j]!r}: value {rows[i][j].strip()!r} is not "
                           "finite; NaN and infinity are not allowed (drop or impute missing values)")
    values, overflow = as_float32(chunk)     # kept as float32: half the memory of what is read so far
    if overflow is not None:
        i, j = overflow
        raise DatasetError(f"line {lines[i]}, column {names[j]!r}: value {rows[i][j].strip()!r} exceeds "
                           "the float32 range")
    return values


def parse_csv(path: Path, *, target: str | None = None, task: Task | None = None,
              limits: Limits | None = None) -> ParsedDataset:
    """Comma-separated UTF-8 with a header row; numeric features; the target column may hold text."""
    limits = limits or Limits()
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            reader = csv.reader(f, strict=True)
            header = read_header(reader, limits.max_features + 1)
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
    X = np.concatenate(chunks)
    del chunks
    y = encode_target(labels, task, f"column {header[t]!r}", lambda i: f"line {label_lines[i]}",
                      limits.max_inferred_classes)
    return ParsedDataset("csv", X, y.y, y.task, y.n_outputs, y.classes, header[t], names, y.inferred, y.reason)

