"""Text as token ids: a byte- or character-level tokenizer, and the contiguous validation tail.

kinds:
  byte  256 ids, id = the byte's value in the text's UTF-8; decode replaces an invalid sequence
        (a model may sample one) with U+FFFD
  char  the vocabulary is the sorted distinct characters of the training text (id = rank by code
        point); encoding a character outside it is a ValueError naming it and its position

A padded tokenizer (sequence classification: rows of unequal length) has pad_id = vocab_size, one
id past the text's vocabulary, so an embedding over it needs num_embeddings = vocab_size + 1
(`Tokenizer.num_embeddings`); decode drops pad ids.

`to_dict()` / `Tokenizer.from_dict()` are JSON: the dataset row and the weights' metadata hold them.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import Tensor

from .tasks import LANGUAGE_MODEL, TOKENIZERS

BYTE_VOCAB = 256


def _code_points(text: str) -> Tensor:
    """int64 (len(text),): each character's code point (UTF-32 holds exactly one unit per character)."""
    if not text:
        return torch.empty(0, dtype=torch.int64)
    return torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32).long()


class Tokenizer:
    """Text <-> int64 ids. Build one with `Tokenizer.byte()`, `Tokenizer.char(text)` or `from_dict`."""

    def __init__(self, kind: Literal["byte", "char"], chars: str | None = None, *, pad: bool = False):
        if kind not in TOKENIZERS:
            raise ValueError(f"tokenizer kind {kind!r} is not one of {list(TOKENIZERS)}")
        if (kind == "char") != (chars is not None):
            raise ValueError("a char tokenizer needs its vocabulary (chars); a byte tokenizer takes none")
        if chars is not None:
            if not chars:
                raise ValueError("a char tokenizer needs at least one character in its vocabulary")
            ordered = "".join(sorted(set(chars)))
            if ordered != chars:
                raise ValueError("chars must be distinct and sorted by code point: "
                                 "''.join(sorted(set(text)))")
        self.kind, self.chars = kind, chars
        self.vocab_size = BYTE_VOCAB if chars is None else len(chars)
        self.pad_id: int | None = self.vocab_size if pad else None
        self._code_points = None if chars is None else _code_points(chars)   # sorted: searchsorted finds ids

    @classmethod
    def byte(cls, *, pad: bool = False) -> "Tokenizer":
        return cls("byte", pad=pad)

    @classmethod
    def char(cls, text: str, *, pad: bool = False) -> "Tokenizer":
        """The vocabulary of `text`: its distinct characters, sorted by code point."""
        return cls("char", "".join(sorted(set(text))), pad=pad)

    @property
    def num_embeddings(self) -> int:
        """Ids this tokenizer produces: the vocabulary, plus the pad id when there is one."""
        return self.vocab_size + (self.pad_id is not None)

    def encode(self, text: str) -> Tensor:
        """int64 (n,) ids of `text` (n: its UTF-8 bytes for byte, its characters for char)."""
        if self.chars is None:
            data = text.encode("utf-8")
            return torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else \
                torch.empty(0, dtype=torch.int64)
        points = _code_points(text)
        ids = torch.searchsorted(self._code_points, points).clamp_(max=self.vocab_size - 1)
        unknown = self._code_points[ids] != points
        if unknown.any():
            i = int(unknown.nonzero()[0])
            raise ValueError(f"character {text[i]!r} (U+{ord(text[i]):04X}) at position {i} is not in the "
                             f"char tokenizer's vocabulary of {self.vocab_size} characters")
        return ids

    def encode_padded(self, texts: Sequence[str], length: int) -> Tensor:
        """int64 (N, length): each text's ids, cut to `length` or right-padded with pad_id."""
        if self.pad_id is None:
            raise ValueError("this tokenizer has no pad id; make it with pad=True to pad rows")
        out = torch.full((len(texts), length), self.pad_id, dtype=torch.int64)
        for row, text in zip(out, texts):
            ids = self.encode(text)[:length]
            row[:len(ids)] = ids
        return out

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The text of `ids`, pad ids dropped; an id outside the vocabulary is a ValueError."""
        ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
        if self.pad_id is not None:
            ids = ids[ids != self.pad_id]
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"id {int(ids[i])} at position {i} is outside the vocabulary "
                             f"[0, {self.vocab_size})")
        if self.chars is None:
            return bytes(ids.to(torch.uint8).tolist()).decode("utf-8", errors="replace")
        return "".join(self.chars[i] for i in ids.tolist())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "vocab_size": self.vocab_size, "pad_id": self.pad_id}
        if self.chars is not None:
            out["chars"] = self.chars
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Tokenizer":
        """The tokenizer `to_dict` described; a ValueError names the field that does not fit."""
        if not isinstance(d, dict):
            raise ValueError(f"a tokenizer is a JSON object, got {type(d).__name__}")
        kind, chars = d.get("kind"), d.get("chars")
        if chars is not None and not isinstance(chars, str):
            raise ValueError(f"tokenizer chars must be a string, got {type(chars).__name__}")
        tokenizer = cls(kind, chars, pad=d.get("pad_id") is not None)
        for field in ("vocab_size", "pad_id"):
            if field in d and d[field] != getattr(tokenizer, field):
                raise ValueError(f"tokenizer {field} is {d[field]!r}; a {kind} tokenizer"
                                 f"{' of these chars' if chars else ''} has {getattr(tokenizer, field)!r}")
        return tokenizer

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Tokenizer({self.kind!r}, vocab_size={self.vocab_size}, pad_id={self.pad_id})"


def validation_tokens(n_tokens: int, validation_split: float) -> int:
    """Tokens in the validation tail: round(n * split), as rows are held out (engine.data)."""
    return round(n_tokens * validation_split)


def split_tokens(ids: Tensor, validation_split: float) -> tuple[Tensor, Tensor]:
    """(train, validation): the stream's head and its contiguous tail, never shuffled: a random
    position's neighbours would be in training, and the tail is text the model has not read."""
    n_val = validation_tokens(len(ids), validation_split)
    return ids[:len(ids) - n_val], ids[len(ids) - n_val:]
