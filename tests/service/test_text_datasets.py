"""Text datasets over HTTP: a UTF-8 file as a language model's token stream, texts with labels (CSV)
or integer ids (NPZ) as sequence classification; every refusal a 4xx that names what and where."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import safetensors
import safetensors.numpy

from core import artifacts
from engine.text import Tokenizer

from conftest import iris_like, npz_bytes

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak. — naïve 🙂\n"


def csv_bytes(header: list[str], rows: list[list]) -> bytes:
    """Quoted as needed: the texts hold commas and quotes."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    return out.getvalue().encode()


def msg(r) -> str:
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else " | ".join(e["msg"] for e in detail)


def loc(r) -> list:
    return r.json()["detail"][0]["loc"]


def stored(svc, dataset_id: str) -> tuple[dict, dict]:
    path = artifacts.resolve(svc.settings, artifacts.dataset_relpath(dataset_id))
    with safetensors.safe_open(str(path), "np") as f:
        metadata = f.metadata()
    return safetensors.numpy.load_file(path), metadata


# ----------------------------------------------------------------------------- language_model
def test_text_file_is_a_byte_token_stream(svc):
    data = TEXT.encode()
    ds = svc.dataset(data, "shakespeare.txt")
    assert (ds["kind"], ds["format"], ds["task"]) == ("language_model", "txt", "language_model")
    assert ds["tokenizer"] == {"kind": "byte", "vocab_size": 256, "pad_id": None, "chars": None}
    assert ds["vocab_size"] == ds["n_outputs"] == 256 and ds["input_shape"] == []
    assert ds["n_tokens"] == ds["n_rows"] == len(data) == 97       # bytes: the dash 3, ï 2, the emoji 4
    assert ds["validation_tokens"] == round(97 * 0.2) == 19        # the default validation_split's tail
    assert ds["task_inferred"] and "next token" in ds["task_reason"]
    tensors, metadata = stored(svc, ds["id"])
    assert set(tensors) == {"ids"} and tensors["ids"].dtype == np.uint8    # one byte per token
    assert tensors["ids"].tobytes() == data
    assert Tokenizer.from_dict(json.loads(metadata["tokenizer"])).to_dict() == \
        Tokenizer.from_dict(ds["tokenizer"]).to_dict() == {"kind": "byte", "vocab_size": 256, "pad_id": None}
    assert metadata["task"] == "language_model"
    got = svc.client.get(f"/v1/datasets/{ds['id']}", headers=svc.a)
    assert got.status_code == 200 and got.json() == ds
    assert svc.client.get(f"/v1/datasets/{ds['id']}", headers=svc.b).status_code == 404
    listed = svc.client.get("/v1/datasets", headers=svc.a).json()["items"]
    assert [d["id"] for d in listed] == [ds["id"]] and listed[0]["n_tokens"] == 97
    assert svc.client.get("/v1/datasets", headers=svc.b).json()["total"] == 0


def test_char_tokenizer_by_content_type_round_trips(svc):
    r = svc.client.post("/v1/datasets", headers=svc.a, data={"tokenizer": "char"},
                        files={"file": ("corpus", TEXT.encode(), "text/plain; charset=utf-8")})
    assert r.status_code == 201, r.text
    ds = r.json()
    chars = "".join(sorted(set(TEXT)))
    assert ds["tokenizer"] == {"kind": "char", "vocab_size": len(chars), "pad_id": None, "chars": chars}
    assert ds["n_tokens"] == len(TEXT) == 91 and ds["vocab_size"] == ds["n_outputs"] == len(chars)
    ids = stored(svc, ds["id"])[0]["ids"]
    assert ids.dtype == np.uint8 and len(ids) == len(TEXT)
    assert Tokenizer.from_dict(ds["tokenizer"]).decode(ids.astype(np.int64).tolist()) == TEXT


def test_bom_is_not_text_and_kind_reads_any_name_as_text(svc):
    ds = svc.dataset(b"\xef\xbb\xbfab\n", "notes.md", kind="language_model")
    assert ds["kind"] == "language_model" and ds["n_tokens"] == 3 and not ds["task_inferred"]
    assert stored(svc, ds["id"])[0]["ids"].tobytes() == b"ab\n"
    # a CSV by name stays a CSV whatever content type the client guessed
    r = svc.client.post("/v1/datasets", headers=svc.a, files={"file": ("iris.csv", iris_like(), "text/plain")})
    assert r.status_code == 201 and r.json()["kind"] == "table"


def test_the_tail_counts_against_the_default_split(svc):
    ds = svc.dataset(b"x" * 1000, "a.txt")
    assert ds["validation_tokens"] == 200 and ds["n_tokens"] == 1000


@pytest.mark.parametrize("content, filename, fields, status, where, words", [
    (b"hello\nwor\xffld", "t.txt", {}, 422, "file", "byte 9 (line 2) is 0xff"),
    (b"abc\xc3", "t.txt", {}, 422, "file", "byte 3 (line 1)"),
    (b"abc\xc3(", "t.txt", {"tokenizer": "char"}, 422, "file", "byte 3 (line 1)"),
    (b"", "t.txt", {}, 422, "file", "the file is empty"),
    (b"\xef\xbb\xbf", "t.txt", {}, 422, "file", "only a byte-order mark"),
    (b"a", "t.txt", {}, 422, "file", "at least 2 tokens"),
    (b"some text", "t.txt", {"target": "y"}, 422, "target", "target does not apply to a text file"),
    (b"some text", "t.txt", {"task": "regression"}, 422, "task", "task does not apply to a text file"),
    (b"some text", "t.txt", {"tokenizer": "word"}, 422, "tokenizer", "'word' is not one of ['byte', 'char']"),
    (b"some text", "t.txt", {"kind": "poem"}, 422, "kind", "'poem' is not one of"),
    (b"some text", "t.txt", {"kind": "sequence_classification"}, 422, "kind", "this is a text file"),
    (npz_bytes(X=np.ones((3, 2)), y=np.zeros(3)), "d.npz", {"kind": "language_model"}, 422, "kind",
     "takes a UTF-8 text file"),
    (iris_like(), "iris.csv", {"tokenizer": "char"}, 422, "tokenizer", "does not apply to a CSV of numbers"),
    (iris_like(), "iris.csv", {"max_length": "8"}, 422, "max_length", "does not apply"),
])
def test_bad_text_is_a_4xx_naming_the_place(svc, content, filename, fields, status, where, words):
    r = svc.upload(content, filename, **fields)
    assert r.status_code == status, r.text
    assert words in msg(r) and loc(r) == ["body", where]


def test_invalid_byte_offset_counts_across_read_chunks(svc):
    # a 2-byte character split by the 1 MiB read, then a bad byte: its offset is in the whole file
    data = b"a" * ((1 << 20) - 1) + "é".encode() + b"\n\xfe"
    r = svc.upload(data, "big.txt")
    assert r.status_code == 422 and f"byte {(1 << 20) + 2} (line 2) is 0xfe" in msg(r)


def test_token_limit_is_a_413_naming_size_and_limit(service_factory):
    svc = service_factory(max_text_tokens=10)
    r = svc.upload(b"abcdefghijk", "t.txt")
    assert r.status_code == 413 and "11 tokens" in msg(r) and "the limit is 10 tokens" in msg(r)
    r = svc.upload("ééééééééééé".encode(), "t.txt", tokenizer="char")     # 11 characters, 22 bytes
    assert r.status_code == 413 and "11 tokens" in msg(r)
    assert svc.upload("éééééééééé".encode(), "t.txt", tokenizer="char").status_code == 201


def test_char_vocabulary_limit_suggests_bytes(service_factory):
    svc = service_factory(max_char_vocab=5)
    r = svc.upload(b"abcdef", "t.txt", tokenizer="char")
    assert r.status_code == 422 and loc(r) == ["body", "tokenizer"]
    assert "more than 5 distinct characters" in msg(r) and "tokenizer=byte" in msg(r)
    assert svc.upload(b"abcdef", "t.txt").json()["tokenizer"]["kind"] == "byte"


def test_a_job_on_text_with_a_table_model_is_a_4xx(svc):
    ds = svc.dataset(TEXT.encode(), "t.txt")
    r = svc.submit(ds["id"])
    assert 400 <= r.status_code < 500, r.text


# ----------------------------------------------------------------------------- sequence_classification
REVIEWS = [["great film, loved it", "pos"], ["dull", "neg"], ['"so" bad', "neg"], ["fine", "pos"]]


def test_csv_text_column_is_padded_byte_ids(svc):
    ds = svc.dataset(csv_bytes(["review", "label"], REVIEWS), "reviews.csv", text_column="review")
    assert (ds["kind"], ds["task"], ds["format"]) == ("sequence_classification", "classification", "csv")
    assert ds["tokenizer"] == {"kind": "byte", "vocab_size": 256, "pad_id": 256, "chars": None}
    assert ds["vocab_size"] == 257 and ds["input_shape"] == [20]           # the longest text, in bytes
    assert ds["classes"] == ["neg", "pos"] and ds["target"] == "label" and ds["feature_names"] == ["review"]
    assert ds["n_tokens"] is None and ds["validation_tokens"] is None
    tensors, metadata = stored(svc, ds["id"])
    X = tensors["X"]
    assert X.dtype == np.int64 and X.shape == (4, 20) and tensors["y"].tolist() == [1, 0, 0, 1]
    assert X[1].tolist() == list(b"dull") + [256] * 16
    tok = Tokenizer.from_dict(ds["tokenizer"])
    assert [tok.decode(row) for row in X.tolist()] == [t for t, _ in REVIEWS]
    assert Tokenizer.from_dict(json.loads(metadata["tokenizer"])) == tok


def test_csv_char_tokenizer_cuts_to_max_length_and_finds_the_target(svc):
    content = csv_bytes(["label", "text"], [[y, t] for t, y in REVIEWS[:2] + REVIEWS[3:]])
    ds = svc.dataset(content, "r.csv", text_column="text", tokenizer="char", max_length="4")
    chars = "".join(sorted(set("great film, loved itdullfine")))
    assert ds["tokenizer"] == {"kind": "char", "vocab_size": len(chars), "pad_id": len(chars), "chars": chars}
    assert ds["vocab_size"] == len(chars) + 1 and ds["input_shape"] == [4] and ds["target"] == "label"
    tok = Tokenizer.from_dict(ds["tokenizer"])
    assert [tok.decode(row) for row in stored(svc, ds["id"])[0]["X"].tolist()] == ["grea", "dull", "fine"]


def test_csv_text_feature_hints_text_column(svc):
    r = svc.upload(csv_bytes(["review", "label"], [["nice", 1], ["bad", 0]]), "r.csv")
    assert r.status_code == 422 and "text_column='review'" in msg(r)


@pytest.mark.parametrize("header, rows, fields, status, where, words", [
    (["text", "label"], REVIEWS, {"text_column": "body"}, 422, "text_column",
     "text column 'body' is not in the header; available columns: ['text', 'label']"),
    (["id", "text", "label"], [[i, t, y] for i, (t, y) in enumerate(REVIEWS)], {"text_column": "text"}, 422,
     "file", "the CSV also has ['id']"),
    (["text", "label"], REVIEWS, {"text_column": "text", "target": "text"}, 422, "target", "both name 'text'"),
    (["text", "label"], [*REVIEWS, ["", "pos"]], {"text_column": "text"}, 422, "file",
     "line 6, column 'text': the text is empty"),
    (["text", "label"], [*REVIEWS, ["ok", ""]], {"text_column": "text"}, 422, "file",
     "line 6, column 'label': the target cell is empty"),
    (["text", "label"], REVIEWS, {"text_column": "text", "max_length": "0"}, 422, "max_length",
     "max_length 0 is not between 1 and 1024"),
    (["text", "label"], REVIEWS, {"text_column": "text", "max_length": "ten"}, 422, "max_length",
     "'ten' is not a whole number"),
    (["text", "label"], REVIEWS, {"text_column": "text", "task": "regression"}, 422, "task",
     "holds class labels"),
    (["text", "score"], [[t, i * 1.5] for i, (t, _) in enumerate(REVIEWS)], {"text_column": "text"}, 422,
     "target", "pass task=classification"),
    (["text", "label"], REVIEWS, {"kind": "sequence_classification"}, 422, "text_column", "needs text_column"),
    (["text", "label"], REVIEWS, {"text_column": "text", "tokenizer": "bpe"}, 422, "tokenizer",
     "'bpe' is not one of"),
])
def test_bad_text_csv_is_a_4xx_naming_the_place(svc, header, rows, fields, status, where, words):
    r = svc.upload(csv_bytes(header, rows), "r.csv", **fields)
    assert r.status_code == status, r.text
    assert words in msg(r) and loc(r) == ["body", where]


def test_text_csv_bounds(service_factory):
    svc = service_factory(max_sequence_length=8, max_char_vocab=4, max_upload_bytes=4000)
    content = csv_bytes(["text", "label"], REVIEWS)
    r = svc.upload(content, "r.csv", text_column="text")
    assert r.status_code == 413          # a 413's detail is its message alone
    assert "line 2, column 'text': the text is 20 tokens, more than the 8" in msg(r) and "max_length" in msg(r)
    assert svc.dataset(content, "r.csv", text_column="text", max_length="8")["input_shape"] == [8]
    r = svc.upload(content, "r.csv", text_column="text", tokenizer="char", max_length="8")
    assert r.status_code == 422 and "tokenizer=byte" in msg(r) and loc(r) == ["body", "tokenizer"]
    many = csv_bytes(["text", "label"], [["ab", i % 2] for i in range(100)])
    r = svc.upload(many, "r.csv", text_column="text", max_length="8")   # 100 × 8 × 8 bytes > 4000
    assert r.status_code == 413 and "6,400 bytes" in msg(r) and "lower max_length" in msg(r)


# ----------------------------------------------------------------------------- NPZ of ids
def test_npz_ids_with_kind_are_sequences_and_without_it_a_table(svc):
    X = np.array([[5, 1, 0], [2, 2, 9], [0, 0, 1], [3, 4, 4]], dtype=np.int32)
    y = np.array(["b", "a", "a", "b"])
    ds = svc.dataset(npz_bytes(X=X, y=y), "ids.npz", kind="sequence_classification")
    assert (ds["kind"], ds["task"], ds["format"]) == ("sequence_classification", "classification", "npz")
    assert ds["vocab_size"] == 10 and ds["input_shape"] == [3] and ds["tokenizer"] is None
    assert ds["classes"] == ["a", "b"]
    tensors, _ = stored(svc, ds["id"])
    assert tensors["X"].dtype == np.int64 and tensors["X"].tolist() == X.tolist()
    table = svc.dataset(npz_bytes(X=X, y=y), "ids.npz")          # integer X, no kind: numbers, as before
    assert table["kind"] == "table" and table["vocab_size"] is None
    assert stored(svc, table["id"])[0]["X"].dtype == np.float32
    images = svc.dataset(npz_bytes(X=np.zeros((4, 1, 2, 2), np.float32), y=y), "img.npz")
    assert images["kind"] == "image"


@pytest.mark.parametrize("X, y, status, words", [
    (np.ones((4, 3), np.float32), np.arange(4) % 2, 422, "sequence ids must be integers"),
    (np.ones((4, 3, 2), np.int64), np.arange(4) % 2, 422, "N×T"),
    (np.array([[1, 2], [3, -3], [0, 0], [1, 1]]), np.arange(4) % 2, 422, "negative id at X[1, 1] = -3"),
    (np.array([[1, 2], [3, 5_000_000], [0, 0], [1, 1]]), np.arange(4) % 2, 413,
     "id 5000000 at X[1, 1]; ids must be below 1,000,000"),
    (np.ones((4, 2000), np.int16), np.arange(4) % 2, 413, "2000 ids per row"),
    (np.ones((4, 3), np.int64), np.ones((4, 2)), 422, "one label per row"),
    (np.ones((4, 3), np.int64), np.array([0.5, 1.5, 2.5, 3.5]), 422, "pass task=classification"),
])
def test_bad_npz_ids_are_a_4xx(svc, X, y, status, words):
    r = svc.upload(npz_bytes(X=X, y=y), "ids.npz", kind="sequence_classification")
    assert r.status_code == status, r.text
    assert words in msg(r)


def test_npz_refuses_text_fields(svc):
    content = npz_bytes(X=np.ones((4, 3), np.int64), y=np.arange(4) % 2)
    r = svc.upload(content, "ids.npz", kind="sequence_classification", tokenizer="char")
    assert r.status_code == 422 and loc(r) == ["body", "tokenizer"] and "does not apply to an NPZ" in msg(r)


def test_tables_report_their_kind_and_no_tokenizer(svc):
    ds = svc.dataset(iris_like(), "iris.csv")
    assert (ds["kind"], ds["tokenizer"], ds["vocab_size"], ds["n_tokens"]) == ("table", None, None, None)


def test_tokenizer_column_on_both_databases(any_svc):
    text = "tab\there, nul\x00 too, and 🙂\n"          # every character survives the JSON column
    ds = any_svc.dataset(text.encode(), "t.txt", tokenizer="char")
    got = any_svc.client.get(f"/v1/datasets/{ds['id']}", headers=any_svc.a).json()
    assert got["tokenizer"]["chars"] == "".join(sorted(set(text))) and got["vocab_size"] == len(set(text))
    assert got["kind"] == "language_model" and got["n_tokens"] == len(text)
