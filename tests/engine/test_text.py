"""engine.text: byte and char tokenizers, padding, their JSON form, the contiguous validation tail."""
from __future__ import annotations

import json

import pytest
import torch

from engine.text import Tokenizer, split_tokens, validation_tokens

TEXT = "To be, or not to be — naïve 🙂\n"


def test_byte_ids_are_the_utf8_bytes_and_round_trip():
    tok = Tokenizer.byte()
    ids = tok.encode(TEXT)
    assert ids.dtype == torch.int64 and ids.tolist() == list(TEXT.encode("utf-8"))
    assert tok.vocab_size == tok.num_embeddings == 256 and tok.pad_id is None
    assert tok.decode(ids) == TEXT and tok.decode(ids.tolist()) == TEXT
    assert tok.encode("").tolist() == [] and tok.decode([]) == ""


def test_byte_decode_replaces_an_invalid_sequence():
    # a model can sample the first byte of a multi-byte character alone
    assert Tokenizer.byte().decode([72, 0xF0, 0x9F, 105]) == "H\ufffdi"


def test_char_vocabulary_is_the_sorted_distinct_characters():
    tok = Tokenizer.char("hello world")
    assert tok.chars == " dehlorw" and tok.vocab_size == 8
    assert tok.encode("hello").tolist() == [3, 2, 4, 4, 5]   # " dehlorw": h=3, e=2, l=4, o=5
    assert tok.decode(tok.encode("world hello")) == "world hello"
    full = Tokenizer.char(TEXT)
    assert full.decode(full.encode(TEXT)) == TEXT
    assert len(full.encode(TEXT)) == len(TEXT)          # one id per character, not per byte


def test_char_unknown_character_names_it_and_its_position():
    tok = Tokenizer.char("abc")
    with pytest.raises(ValueError, match=r"character 'z' \(U\+007A\) at position 2 is not in"):
        tok.encode("abzc")
    with pytest.raises(ValueError, match="position 1"):
        tok.encode("a\U0001F642")                        # above the vocabulary's largest code point
    with pytest.raises(ValueError, match="position 0"):
        tok.encode(" ")                                  # below its smallest


def test_decode_refuses_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match=r"id 3 at position 1 is outside the vocabulary \[0, 3\)"):
        Tokenizer.char("abc").decode([0, 3])
    with pytest.raises(ValueError, match="id -1"):
        Tokenizer.byte().decode([-1])


def test_pad_id_is_one_past_the_vocabulary():
    tok = Tokenizer.char("abc", pad=True)
    assert tok.pad_id == 3 and tok.vocab_size == 3 and tok.num_embeddings == 4
    X = tok.encode_padded(["ab", "cabca", ""], 4)
    assert X.dtype == torch.int64 and X.tolist() == [[0, 1, 3, 3], [2, 0, 1, 2], [3, 3, 3, 3]]
    assert tok.decode(X[0]) == "ab"                      # pads are not text
    byte = Tokenizer.byte(pad=True)
    assert byte.pad_id == 256 and byte.num_embeddings == 257
    assert byte.encode_padded(["é"], 3).tolist() == [[0xC3, 0xA9, 256]]
    with pytest.raises(ValueError, match="no pad id"):
        Tokenizer.byte().encode_padded(["a"], 2)


@pytest.mark.parametrize("tok", [Tokenizer.byte(), Tokenizer.byte(pad=True), Tokenizer.char(TEXT),
                                 Tokenizer.char("\x00\n\"\\ab", pad=True)])
def test_to_dict_is_json_and_round_trips(tok):
    d = json.loads(json.dumps(tok.to_dict()))
    back = Tokenizer.from_dict(d)
    assert back == tok and back.to_dict() == tok.to_dict()
    assert back.encode("ab" if tok.kind == "char" else TEXT).tolist() == \
        tok.encode("ab" if tok.kind == "char" else TEXT).tolist()


@pytest.mark.parametrize("d, words", [
    ({"kind": "word"}, "'word' is not one of"),
    ({"kind": "char"}, "needs its vocabulary"),
    ({"kind": "byte", "chars": "ab"}, "takes none"),
    ({"kind": "char", "chars": "ba"}, "sorted by code point"),
    ({"kind": "char", "chars": "aab"}, "distinct"),
    ({"kind": "char", "chars": ["a"]}, "must be a string"),
    ({"kind": "char", "chars": "ab", "vocab_size": 3}, "vocab_size is 3"),
    ({"kind": "byte", "pad_id": 3}, "pad_id is 3"),
    ([1], "JSON object"),
])
def test_from_dict_names_what_does_not_fit(d, words):
    with pytest.raises(ValueError, match=words):
        Tokenizer.from_dict(d)


def test_validation_is_the_contiguous_tail():
    ids = torch.arange(10)
    train, val = split_tokens(ids, 0.25)
    assert validation_tokens(10, 0.25) == 2 == len(val)     # round(2.5) = 2, as rows are split
    assert train.tolist() == list(range(8)) and val.tolist() == [8, 9]
    train, val = split_tokens(ids, 0.0)
    assert len(train) == 10 and len(val) == 0
