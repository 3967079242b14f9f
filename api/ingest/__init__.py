"""Dataset files -> arrays the engine trains on. Pure functions: a path in, a ParsedDataset out.

Every failure is a DatasetError whose message names the place (file line and column,
or array and index, or byte offset) and what would be valid; the route turns it into a 4xx.

Which parser reads an upload: an NPZ by its zip header; text (a .txt name, else a text/plain
part, or kind=language_model) as a language_model's token stream; a CSV with text_column as
sequence classification; any other CSV as a table.

Stored form (core.artifacts.dataset_relpath, safetensors):
  X  float32 (N, *input_shape), input_shape = [F] or [C, H, W]; sequence_classification: int64 (N, T) ids
  y  classification: int64 (N,) class ids, index into `classes` (sorted original labels)
     regression:     float32 (N, n_outputs)
  ids  language_model only (no X, y): the text's token ids in order (uint8, int16 or int32)
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from core.tables import SEQUENCE_CLASSIFICATION
from engine.tasks import LANGUAGE_MODEL, TOKENIZERS

from .common import DatasetError, Limits, ParsedDataset, Task
from .from_csv import parse_csv
from .from_npz import parse_npz
from .from_sequences import parse_id_npz, parse_text_csv
from .from_text import parse_text

_NPZ_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"
UPLOAD_KINDS = (LANGUAGE_MODEL, SEQUENCE_CLASSIFICATION)   # what `kind` may ask for; tables and images are by shape

__all__ = ["DatasetError", "Limits", "ParsedDataset", "Task", "TOKENIZERS", "UPLOAD_KINDS", "detect_format",
           "parse_dataset", "parse_csv", "parse_npz", "parse_text", "parse_text_csv", "parse_id_npz"]


def detect_format(path: Path, filename: str | None,
                  content_type: str | None = None) -> Literal["csv", "npz", "txt"]:
    """An NPZ by content (a zip archive); text by a .txt name, or a text/plain part whose name says
    nothing (.csv wins over the content type, which clients guess); anything else is read as CSV."""
    with open(path, "rb") as f:
        head = f.read(8)
    name = (filename or "").lower()
    if head.startswith(_NPZ_MAGIC):
        return "npz"
    if head.startswith(_NPY_MAGIC):
        raise DatasetError("the file is a single .npy array; upload an .npz holding arrays X and y "
                           "(np.savez(path, X=X, y=y))")
    if name.endswith(".npz"):
        raise DatasetError(f"{filename!r} is not an NPZ archive (no zip header); save it with "
                           "np.savez(path, X=X, y=y)")
    if name.endswith(".txt") or (not name.endswith(".csv") and content_type == "text/plain"):
        return "txt"
    return "csv"


def parse_dataset(path: Path, filename: str | None = None, *, target: str | None = None,
                  task: Task | None = None, limits: Limits | None = None, kind: str | None = None,
                  tokenizer: str | None = None, text_column: str | None = None, max_length: int | None = None,
                  content_type: str | None = None) -> ParsedDataset:
    """Parse an upload. A DatasetError leaves without the parser's frames: they hold every array
    and label read so far, which an error kept alive (up to ~10x the file) until a full garbage
    collection found its traceback's cycle, long after the 4xx had gone out.

    kind: None infers it (see the module's docstring); tokenizer: byte (default) or char, for text."""
    try:
        return _parse(path, filename, content_type, limits or Limits(), kind=kind, target=target, task=task,
                      tokenizer=tokenizer, text_column=text_column, max_length=max_length)
    except DatasetError as e:
        e.__context__ = None   # the exception it was raised from also holds the frames
        raise e.with_traceback(None) from None


def _not_for(what: str, **given) -> None:
    """Refuse the first field that was given but means nothing for `what`."""
    for field, value in given.items():
        if value is not None:
            raise DatasetError(f"{field} does not apply to {what}", field=field)


def _parse(path: Path, filename: str | None, content_type: str | None, limits: Limits, *, kind: str | None,
           target: str | None, task: Task | None, tokenizer: str | None, text_column: str | None,
           max_length: int | None) -> ParsedDataset:
    if path.stat().st_size == 0:
        raise DatasetError("the file is empty")
    fmt = detect_format(path, filename, content_type)
    char = "char" if tokenizer == "char" else None   # byte, the default, goes with any file (forms send it)
    if kind == LANGUAGE_MODEL and fmt == "npz":
        raise DatasetError("kind=language_model takes a UTF-8 text file; this one is an NPZ archive", field="kind")
    if kind == LANGUAGE_MODEL or (kind is None and fmt == "txt"):
        _not_for("a text file (a language model's target is each next token; its rows are its tokens)",
                 target=target, task=task, text_column=text_column, max_length=max_length)
        return parse_text(path, tokenizer=tokenizer or "byte", limits=limits, inferred=kind is None)
    if fmt == "txt":
        raise DatasetError("kind=sequence_classification takes a CSV (a text column and a target) or an NPZ of "
                           "integer ids X and labels y; this is a text file (kind=language_model)", field="kind")
    if fmt == "npz":
        if target is not None:
            raise DatasetError("`target` names a CSV column; an NPZ's target is always its array y",
                               field="target")
        _not_for("an NPZ (its X holds numbers, or ids already)", text_column=text_column, tokenizer=char,
                 max_length=max_length)
        if kind == SEQUENCE_CLASSIFICATION:
            return parse_id_npz(path, task=task, limits=limits)
        return parse_npz(path, task=task, limits=limits)
    if text_column is None:
        if kind == SEQUENCE_CLASSIFICATION:
            raise DatasetError("kind=sequence_classification of a CSV needs text_column: the column holding "
                               "the text", field="text_column")
        _not_for("a CSV of numbers; a CSV of texts names its text column with text_column",
                 tokenizer=char, max_length=max_length)
        return parse_csv(path, target=target, task=task, limits=limits)
    return parse_text_csv(path, text_column=text_column, target=target, task=task, tokenizer=tokenizer or "byte",
                          max_length=max_length, limits=limits)
