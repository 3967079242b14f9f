"""Sequence classification: rows of token ids X int64 (N, T) and a class label per row.

From a CSV of two columns, a text column (named by `text_column`) and the target (`target`, else
the last other column): each text is
tokenized (byte or char, the vocabulary of a char tokenizer being every text's characters), cut or
right-padded to max_length with the tokenizer's pad id (vocab_size: embeddings need vocab_size + 1).
Or from an NPZ whose X holds integer ids (N, T) already, with kind=sequence_classification (without
it, an integer X is a table of numbers, as it always was).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from engine.tasks import TOKENIZERS
from engine.text import Tokenizer

from .common import MIN_ROWS, DatasetError, Limits, ParsedDataset, Task
from .from_csv import read_header
from .from_npz import read_arrays
from .targets import Target, encode_target

_ID_BYTES = 8   # X is stored int64


def _class_target(labels, task: Task | None, what: str, where, limits: Limits) -> Target:
    """The labels as classes; a target that reads as numbers to fit is refused, not regressed."""
    if task == "regression":
        raise DatasetError("task=regression: a sequence_classification dataset's target holds class labels; "
                           "leave task empty or pass task=classification", field="task")
    target = encode_target(labels, task, what, where, limits.max_inferred_classes)
    if target.task != "classification":
        raise DatasetError(f"{target.reason}; sequence classification needs class labels: pass "
                           "task=classification to take them as classes", field="target")
    return target


def _check_size(n: int, length: int, limits: Limits) -> None:
    """Padding can make a few short texts into many ids: X is bounded like an NPZ's arrays."""
    nbytes = n * length * _ID_BYTES
    if nbytes > limits.max_bytes:
        raise DatasetError(f"{n} rows × max_length {length} int64 ids = {nbytes:,} bytes, more than the upload "
                           f"limit of {limits.max_bytes:,} bytes; lower max_length or upload fewer rows",
                           field="max_length", status=413)


def _read_rows(path: Path, text_column: str, target: str | None, limits: Limits):
    """(texts, labels, lines, header, target name) of a two-column CSV."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = read_header(reader, limits.max_features + 1)
            if text_column not in header:
                raise DatasetError(f"text column {text_column!r} is not in the header; available columns: "
                                   f"{header}", field="text_column")
            others = [c for c in header if c != text_column]
            target = target if target is not None else others[-1]
            if target == text_column:
                raise DatasetError(f"target and text_column both name {text_column!r}; the target is the "
                                   "column of class labels", field="target")
            if target is not None and target not in header:
                raise DatasetError(f"target column {target!r} is not in the header; available columns: "
                                   f"{header}", field="target")
            extra = [c for c in others if c != target]
            if extra:
                raise DatasetError(f"sequence classification reads two columns, the text ({text_column!r}) and "
                                   f"the target ({target!r}); the CSV also has {extra}: drop them")
            t, x = header.index(target), header.index(text_column)
            texts, labels, lines = [], [], []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(header):
                    raise DatasetError(f"line {reader.line_num} has {len(row)} columns; the header has {len(header)}")
                if len(texts) >= limits.max_rows:
                    raise DatasetError(f"more than {limits.max_rows} data rows; the limit is {limits.max_rows}",
                                       status=413)
                if not row[x]:
                    raise DatasetError(f"line {reader.line_num}, column {text_column!r}: the text is empty")
                if not row[t].strip():
                    raise DatasetError(f"line {reader.line_num}, column {target!r}: the target cell is empty")
                texts.append(row[x])
                labels.append(row[t].strip())
                lines.append(reader.line_num)
        except UnicodeDecodeError as e:
            raise DatasetError(f"the file is not UTF-8 text (byte {e.start}: {e.reason}); upload the CSV as "
                               "UTF-8") from None
        except csv.Error as e:
            raise DatasetError(f"line {reader.line_num}: malformed CSV ({e})") from None
    if len(texts) < MIN_ROWS:
        raise DatasetError(f"the CSV has {len(texts)} data row{'s' if len(texts) != 1 else ''}; at least "
                           f"{MIN_ROWS} are needed")
    return texts, labels, lines, target


def _tokenizer(texts: list[str], kind: str, limits: Limits) -> Tokenizer:
    if kind not in TOKENIZERS:
        raise DatasetError(f"tokenizer {kind!r} is not one of {list(TOKENIZERS)}", field="tokenizer")
    if kind == "byte":
        return Tokenizer.byte(pad=True)
    chars = set().union(*texts)
    if len(chars) > limits.max_char_vocab:
        raise DatasetError(f"the texts hold {len(chars)} distinct characters, more than the "
                           f"{limits.max_char_vocab} of a char tokenizer's vocabulary (max_char_vocab); upload "
                           "with tokenizer=byte, whose 256 ids cover any text", field="tokenizer")
    return Tokenizer("char", "".join(sorted(chars)), pad=True)


def _length(lengths: list[int], lines: list[int], column: str, max_length: int | None, limits: Limits) -> int:
    """max_length as given, else the longest text's, which must be within max_sequence_length."""
    if max_length is not None:
        if not 1 <= max_length <= limits.max_sequence_length:
            raise DatasetError(f"max_length {max_length} is not between 1 and {limits.max_sequence_length} "
                               "(max_sequence_length)", field="max_length")
        return max_length
    i = int(np.argmax(lengths))
    if lengths[i] > limits.max_sequence_length:
        raise DatasetError(f"line {lines[i]}, column {column!r}: the text is {lengths[i]} tokens, more than "
                           f"the {limits.max_sequence_length} a row may hold (max_sequence_length); pass "
                           f"max_length (at most {limits.max_sequence_length}) to cut longer texts to it",
                           field="max_length", status=413)
    return lengths[i]


def parse_text_csv(path: Path, *, text_column: str, target: str | None = None, task: Task | None = None,
                   tokenizer: str = "byte", max_length: int | None = None,
                   limits: Limits | None = None) -> ParsedDataset:
    """A CSV of texts and labels -> ids X int64 (N, max_length), padded with the tokenizer's pad id."""
    limits = limits or Limits()
    texts, labels, lines, target = _read_rows(path, text_column, target, limits)
    tok = _tokenizer(texts, tokenizer, limits)
    ids = [tok.encode(text) for text in texts]
    length = _length([len(i) for i in ids], lines, text_column, max_length, limits)
    _check_size(len(texts), length, limits)
    X = np.full((len(texts), length), tok.pad_id, dtype=np.int64)
    for row, seq in zip(X, ids):
        seq = seq[:length].numpy()
        row[:len(seq)] = seq
    y = _class_target(labels, task, f"column {target!r}", lambda i: f"line {lines[i]}", limits)
    return ParsedDataset("csv", X, y.y, y.task, y.n_outputs, y.classes, target, [text_column], y.inferred,
                         y.reason, tokenizer=tok.to_dict(), vocab_size=tok.num_embeddings)


def parse_id_npz(path: Path, *, task: Task | None = None, limits: Limits | None = None) -> ParsedDataset:
    """np.savez(path, X=ids, y=labels): X integer (N, T) token ids >= 0, y (N,) class labels."""
    limits = limits or Limits()
    X, y = read_arrays(path, limits)
    if X.dtype.kind not in "iu":
        raise DatasetError(f"array 'X' has dtype {X.dtype}; sequence ids must be integers "
                           "(X.astype(np.int64))")
    if X.ndim != 2:
        raise DatasetError(f"array 'X' has shape {X.shape}; sequence ids are N×T (a row of T ids per sample)")
    n, length = X.shape
    if n < MIN_ROWS:
        raise DatasetError(f"array 'X' has {n} rows; at least {MIN_ROWS} are needed")
    if not 1 <= length <= limits.max_sequence_length:
        raise DatasetError(f"array 'X' has {length} ids per row; between 1 and {limits.max_sequence_length} "
                           "(max_sequence_length)", status=413 if length else 422)
    _check_size(n, length, limits)
    low, high = np.unravel_index(X.argmin(), X.shape), np.unravel_index(X.argmax(), X.shape)
    if X[low] < 0:
        raise DatasetError(f"array 'X' holds a negative id at X[{low[0]}, {low[1]}] = {X[low]}; ids index an "
                           "embedding from 0")
    if X[high] >= limits.max_vocab_size:
        raise DatasetError(f"array 'X' holds id {X[high]} at X[{high[0]}, {high[1]}]; ids must be below "
                           f"{limits.max_vocab_size:,} (max_vocab_size)", status=413)
    if y.shape[:1] != (n,) or y.ndim != 1 and y.shape != (n, 1):
        raise DatasetError(f"array 'y' has shape {y.shape}; sequence classification needs one label per "
                           f"row: ({n},)")
    y = y.reshape(n)
    if y.dtype.kind == "S":
        y = np.char.decode(y, "utf-8", errors="replace")
    if y.dtype.kind not in "biufU":
        raise DatasetError(f"array 'y' has dtype {y.dtype}; it must hold numbers or text labels")
    target = _class_target(y.tolist() if y.dtype.kind == "U" else y, task, "array 'y'", lambda i: f"y[{i}]",
                           limits)
    return ParsedDataset("npz", X.astype(np.int64), target.y, target.task, target.n_outputs, target.classes,
                         task_inferred=target.inferred, task_reason=target.reason, vocab_size=int(X[high]) + 1)
