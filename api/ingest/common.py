"""What every dataset format shares: the parsed form, the error, the limits, the float32 check."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import safetensors.numpy

from engine import TASKS
from engine.text import LANGUAGE_MODEL

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
    max_text_tokens: int = 50_000_000    # a language_model text's tokens (byte: its bytes; char: its characters)
    max_char_vocab: int = 1024           # distinct characters a char tokenizer may hold
    max_sequence_length: int = 1024      # ids per row of a sequence_classification dataset
    max_vocab_size: int = 1_000_000      # every id of an NPZ of ids is below this


@dataclass
class ParsedDataset:
    format: Literal["csv", "npz", "txt"]
    X: np.ndarray                   # float32 (N, *input_shape); int64 (N, T) ids; a text's ids (n_tokens,)
    y: np.ndarray | None            # int64 (N,) or float32 (N, n_outputs); None for a language_model
    task: str                       # a Task, or language_model
    n_outputs: int
    classes: list[Any] | None = None
    target: str | None = None
    feature_names: list[str] | None = None
    task_inferred: bool = False
    task_reason: str | None = None
    tokenizer: dict[str, Any] | None = None   # engine.text.Tokenizer.to_dict()
    vocab_size: int | None = None             # ids lie in [0, vocab_size) (sequence kinds only)

    @property
    def n_rows(self) -> int:
        """Rows; a language_model's tokens."""
        return int(self.X.shape[0])

    @property
    def input_shape(self) -> list[int]:
        """[F], [C, H, W], [T] ids per row; [] for a language_model, whose context length is the job's."""
        return [int(d) for d in self.X.shape[1:]]

    def to_safetensors(self) -> bytes:
        """X and y; a language_model's token stream as `ids` (uint8 while the vocabulary fits, else
        int16 / int32: the worker widens it to int64). The tokenizer rides in the metadata."""
        tensors = ({"ids": self.X} if self.task == LANGUAGE_MODEL else {"X": self.X, "y": self.y})
        metadata = {"task": self.task, "format": self.format}
        if self.tokenizer is not None:
            metadata["tokenizer"] = json.dumps(self.tokenizer)
        return safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)



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
