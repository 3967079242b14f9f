"""A UTF-8 text file -> its token stream, for a language model (predict each next token).

Read in chunks with an incremental decoder, so memory stays a chunk of text plus the ids: a byte
tokenizer's ids are the file's bytes once they are known to be UTF-8; a char tokenizer reads the
file twice, once for its vocabulary and once to encode. A leading byte-order mark is not text.
"""
from __future__ import annotations

import codecs
from pathlib import Path

import numpy as np

from engine.tasks import LANGUAGE_MODEL, TOKENIZERS
from engine.text import Tokenizer

from .common import DatasetError, Limits, ParsedDataset

MIN_TOKENS = 2           # one input and the token that follows it
_CHUNK_BYTES = 1 << 20


def _ids_dtype(num_embeddings: int) -> np.dtype:
    """The narrowest integer type that holds every id: a byte text is stored one byte per token."""
    for dtype in (np.uint8, np.int16, np.int32):
        if num_embeddings - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise AssertionError("unreachable: a vocabulary is bounded far below int32")


def _text_chunks(path: Path, start: int):
    """Decoded chunks of the file from byte `start`; DatasetError at the first byte that is not UTF-8,
    naming its offset in the file and its line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, newlines = start, 0   # bytes read before this chunk; newlines among the decoded ones
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            chunk = f.read(_CHUNK_BYTES)
            pending = decoder.getstate()[0]   # an incomplete character carried from the last chunk
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                data = pending + chunk
                at = offset - len(pending) + e.start
                line = newlines + data[:e.start].count(b"\n") + 1
                raise DatasetError(f"the file is not UTF-8 text: byte {at} (line {line}) is {data[e.start]:#04x}, "
                                   f"{e.reason}; save the text as UTF-8") from None
            if text:
                newlines += text.count("\n")
                yield text
            if not chunk:
                return
            offset += len(chunk)


def _too_many_tokens(n: int, limits: Limits) -> DatasetError:
    return DatasetError(f"the text holds {n:,} tokens or more; the limit is {limits.max_text_tokens:,} tokens "
                        "(max_text_tokens)", status=413)


def _char_vocabulary(path: Path, start: int, limits: Limits) -> tuple[str, int]:
    """The sorted distinct characters of the text, and how many characters it holds."""
    seen: set[str] = set()
    n = 0
    for text in _text_chunks(path, start):
        seen.update(text)
        n += len(text)
        if n > limits.max_text_tokens:
            raise _too_many_tokens(n, limits)
        if len(seen) > limits.max_char_vocab:
            raise DatasetError(f"the text holds more than {limits.max_char_vocab} distinct characters (by "
                               f"character {n:,}), the limit of a char tokenizer's vocabulary (max_char_vocab); "
                               "upload it with tokenizer=byte, whose 256 ids cover any text", field="tokenizer")
    return "".join(sorted(seen)), n


def parse_text(path: Path, *, tokenizer: str = "byte", limits: Limits | None = None,
               inferred: bool = True) -> ParsedDataset:
    """A language_model dataset: the text's ids in order, and its tokenizer.

    `inferred`: the file was taken as text by its name or content type (not by kind=language_model)."""
    limits = limits or Limits()
    if tokenizer not in TOKENIZERS:
        raise DatasetError(f"tokenizer {tokenizer!r} is not one of {list(TOKENIZERS)}", field="tokenizer")
    with open(path, "rb") as f:
        start = len(codecs.BOM_UTF8) if f.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8 else 0
    size = path.stat().st_size - start
    if tokenizer == "byte":
        if size > limits.max_text_tokens:     # one token per byte: refused before reading a byte of it
            raise _too_many_tokens(size, limits)
        for _ in _text_chunks(path, start):   # UTF-8 throughout, or the first bad byte is named
            pass
        tok = Tokenizer.byte()
        ids = np.fromfile(path, dtype=np.uint8, offset=start)
    else:
        chars, n = _char_vocabulary(path, start, limits)
        tok = Tokenizer("char", chars) if chars else None
        ids = np.empty(n, dtype=_ids_dtype(len(chars)))
        at = 0
        for text in _text_chunks(path, start):
            ids[at:at + len(text)] = tok.encode(text).numpy()
            at += len(text)
    if len(ids) < MIN_TOKENS:
        what = "only a byte-order mark" if start and not len(ids) else f"{len(ids)} token"
        raise DatasetError(f"the text holds {what}; a language model needs at least {MIN_TOKENS} tokens "
                           "(an input and the token after it)")
    how = "a .txt file or text/plain upload" if inferred else "kind=language_model was given with the upload"
    return ParsedDataset("txt", ids, None, LANGUAGE_MODEL, tok.vocab_size, task_inferred=inferred,
                         task_reason=f"{how}: predict each next token of its {len(ids):,} {tok.kind} tokens "
                                     f"(a vocabulary of {tok.vocab_size})",
                         tokenizer=tok.to_dict(), vocab_size=tok.vocab_size)
