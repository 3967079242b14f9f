"""api.ingest: the pure parsing functions, on files written to tmp_path."""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import safetensors.numpy

from api.ingest import DatasetError, Limits, parse_dataset

from conftest import csv_bytes, npz_bytes


def parse(tmp_path, content: bytes, filename: str = "d.csv", **kw):
    path = tmp_path / "upload"
    path.write_bytes(content)
    return parse_dataset(path, filename, **kw)


def error(tmp_path, content: bytes, filename: str = "d.csv", **kw) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        parse(tmp_path, content, filename, **kw)
    return info.value


# ----------------------------------------------------------------------------- CSV, good
def test_csv_string_labels_become_sorted_classes_and_int_ids(tmp_path):
    d = parse(tmp_path, csv_bytes(["x1", "x2", "species"], [[1, 2, "virginica"], [3, 4, "setosa"],
                                                             [5, 6, "versicolor"], [7, 8, "setosa"]]))
    assert d.task == "classification"
    assert d.classes == ["setosa", "versicolor", "virginica"]
    assert d.y.dtype == np.int64 and d.y.tolist() == [2, 0, 1, 0]
    assert d.X.dtype == np.float32 and d.X.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert d.input_shape == [2] and d.n_outputs == 3 and d.n_rows == 4
    assert d.feature_names == ["x1", "x2"] and d.target == "species"


def test_numeric_classes_sort_numerically_not_as_text(tmp_path):
    rows = [[i, c] for i, c in enumerate([10, 9, 2, 10, 9, 2, 10, 9])]
    d = parse(tmp_path, csv_bytes(["x", "label"], rows))
    assert d.task == "classification"
    assert d.classes == [2, 9, 10]          # as text this would be [10, 2, 9]
    assert d.y.tolist() == [2, 1, 0, 2, 1, 0, 2, 1]


def test_target_column_chosen_by_name_anywhere_in_the_header(tmp_path):
    d = parse(tmp_path, csv_bytes(["y", "a", "b"], [[0.5, 1, 2], [1.5, 3, 4], [2.25, 5, 6]]), target="y")
    assert d.task == "regression" and d.feature_names == ["a", "b"]
    assert d.y.dtype == np.float32 and d.y.shape == (3, 1) and d.y[:, 0].tolist() == [0.5, 1.5, 2.25]
    assert d.X.tolist() == [[1, 2], [3, 4], [5, 6]]


@pytest.mark.parametrize("targets, task", [
    ([0, 1, 0, 1, 0, 1], "classification"),          # few integers
    ([0.5, 1.5, 0.25, 1, 2, 3], "regression"),       # fractions
    (list(range(6)), "regression"),                  # an integer per row: more than N/2 distinct
    ([1.0, 2.0, 1.0, 2.0], "classification"),        # integer-valued floats
])
def test_task_inference(tmp_path, targets, task):
    d = parse(tmp_path, csv_bytes(["x", "t"], [[i, t] for i, t in enumerate(targets)]))
    assert d.task == task


def test_explicit_task_overrides_inference(tmp_path):
    content = csv_bytes(["x", "t"], [[i, i % 2] for i in range(6)])
    assert parse(tmp_path, content, task="regression").task == "regression"
    content = csv_bytes(["x", "t"], [[i, i] for i in range(6)])
    d = parse(tmp_path, content, task="classification")
    assert d.task == "classification" and d.n_outputs == 6


def test_bom_quotes_blank_lines_and_whitespace_are_accepted(tmp_path):
    content = '\ufeff"a","b","label"\n 1.5 ,2,"x"\n\n3,4,y\n'.encode()
    d = parse(tmp_path, content)
    assert d.feature_names == ["a", "b"] and d.X.tolist() == [[1.5, 2], [3, 4]] and d.classes == ["x", "y"]


def test_stored_form_is_safetensors_with_X_and_y(tmp_path):
    d = parse(tmp_path, csv_bytes(["a", "t"], [[1, "p"], [2, "q"]]))
    back = safetensors.numpy.load(d.to_safetensors())
    assert back["X"].dtype == np.float32 and back["X"].shape == (2, 1)
    assert back["y"].dtype == np.int64 and back["y"].tolist() == [0, 1]


# ----------------------------------------------------------------------------- CSV, bad
def test_header_of_numbers_is_no_header(tmp_path):
    e = error(tmp_path, b"1,2,3\n4,5,6\n")
    assert "no header row" in e.message and "line 1" in e.message


def test_ragged_row_names_file_line_and_both_counts(tmp_path):
    e = error(tmp_path, b"a,b,t\n1,2,0\n3,4,1\n5,6\n7,8,1\n")
    assert "line 4" in e.message and "2 columns" in e.message and "header has 3" in e.message


@pytest.mark.parametrize("cell, words", [("abc", "'abc' is not a number"), ("", "is empty"),
                                         ("nan", "not finite"), ("inf", "not finite"),
                                         ("-Infinity", "not finite")])
def test_bad_feature_cell_names_line_and_column(tmp_path, cell, words):
    e = error(tmp_path, f"a,b,t\n1,2,0\n3,{cell},1\n5,6,0\n".encode())
    assert "line 3" in e.message and "column 'b'" in e.message and words in e.message


def test_bad_cell_found_past_the_first_chunk(tmp_path):
    rows = [[i, i % 2] for i in range(9000)]
    rows[8500][0] = "oops"
    e = error(tmp_path, csv_bytes(["a", "t"], rows))
    assert "line 8502" in e.message and "column 'a'" in e.message


def test_missing_target_column_lists_available_columns(tmp_path):
    e = error(tmp_path, b"a,b,t\n1,2,0\n3,4,1\n", target="label")
    assert e.field == "target" and "'label'" in e.message and "['a', 'b', 't']" in e.message


def test_too_few_rows(tmp_path):
    e = error(tmp_path, b"a,t\n1,0\n")
    assert "1 data row" in e.message and "at least 2" in e.message


def test_a_single_class_is_refused(tmp_path):
    e = error(tmp_path, b"a,t\n1,x\n2,x\n3,x\n")
    assert "single class" in e.message and "'x'" in e.message


def test_regression_on_text_names_the_line(tmp_path):
    e = error(tmp_path, b"a,t\n1,1.5\n2,two\n3,2.5\n", task="regression")
    assert "line 3" in e.message and "'two'" in e.message and "not a number" in e.message


def test_nan_regression_target_is_refused(tmp_path):
    e = error(tmp_path, b"a,t\n1,1.5\n2,2.5\n3,nan\n")
    assert "not finite" in e.message and "line 4" in e.message


def test_empty_target_cell(tmp_path):
    e = error(tmp_path, b"a,t\n1,x\n2,\n3,y\n")
    assert "line 3" in e.message and "target cell is empty" in e.message


def test_duplicate_and_empty_header_names(tmp_path):
    assert "appears twice" in error(tmp_path, b"a,a,t\n1,2,0\n3,4,1\n").message
    assert "column 1 has no name" in error(tmp_path, b",a,t\n1,2,0\n3,4,1\n").message


def test_row_limit_is_a_413_with_the_limit(tmp_path):
    e = error(tmp_path, csv_bytes(["a", "t"], [[i, i % 2] for i in range(11)]), limits=Limits(max_rows=10))
    assert e.status == 413 and "10" in e.message


def test_column_limit_is_checked_on_the_header(tmp_path):
    e = error(tmp_path, csv_bytes([f"c{i}" for i in range(6)], [[1] * 6, [2] * 6]), limits=Limits(max_features=4))
    assert e.status == 413 and "6 columns" in e.message and "limit is 5" in e.message


def test_wide_rows_are_converted_in_small_chunks(tmp_path, monkeypatch):
    import api.ingest.from_csv as from_csv
    monkeypatch.setattr(from_csv, "_CSV_CHUNK_CELLS", 10)   # 3 rows of 4 features per chunk
    rows = [[i, i + 1, i + 2, i + 3, i % 2] for i in range(10)]
    rows[7][2] = "x"
    e = error(tmp_path, csv_bytes(["a", "b", "c", "d", "t"], rows))
    assert "line 9, column 'c'" in e.message
    rows[7][2] = 5
    d = parse(tmp_path, csv_bytes(["a", "b", "c", "d", "t"], rows))
    assert d.X[:, 0].tolist() == list(range(10)) and d.X[7, 2] == 5


def test_non_utf8_and_empty_files(tmp_path):
    assert "not UTF-8" in error(tmp_path, b"a,t\n\xff\xfe,1\n").message
    assert "empty" in error(tmp_path, b"").message
    assert "no rows" in error(tmp_path, b"\n\n").message


def test_text_identifiers_are_not_guessed_as_labels(tmp_path):
    rows = [[i, f"id-{i}"] for i in range(60)]
    e = error(tmp_path, csv_bytes(["a", "name"], rows))
    assert "identifier" in e.message and e.field == "target"
    assert parse(tmp_path, csv_bytes(["a", "name"], rows), task="classification").n_outputs == 60


# ----------------------------------------------------------------------------- NPZ
def test_npz_images_and_integer_labels(tmp_path):
    X = np.random.default_rng(0).normal(size=(6, 1, 4, 4))
    d = parse(tmp_path, npz_bytes(X=X, y=np.array([3, 1, 3, 1, 3, 1])), "img.npz")
    assert d.format == "npz" and d.input_shape == [1, 4, 4] and d.X.dtype == np.float32
    assert d.task == "classification" and d.classes == [1, 3] and d.y.tolist() == [1, 0, 1, 0, 1, 0]
    assert d.target is None and d.feature_names is None


def test_npz_multi_output_regression(tmp_path):
    d = parse(tmp_path, npz_bytes(X=np.ones((4, 3)), y=np.arange(8.0).reshape(4, 2) / 3), "r.npz")
    assert d.task == "regression" and d.n_outputs == 2 and d.y.shape == (4, 2)


def test_npz_is_detected_by_content_not_name(tmp_path):
    d = parse(tmp_path, npz_bytes(X=np.ones((4, 2)), y=np.array(["a", "b", "a", "b"])), "upload.bin")
    assert d.format == "npz" and d.classes == ["a", "b"]


def test_npz_with_object_array_is_refused(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, X=np.ones((4, 2)), y=np.array([1, "a", None, 2.5], dtype=object))
    e = error(tmp_path, buf.getvalue(), "d.npz")
    assert "Python objects (they need pickle)" in e.message and "'y'" in e.message


def test_a_pickle_named_npz_is_refused(tmp_path):
    e = error(tmp_path, pickle.dumps({"X": [[1, 2]], "y": [0]}), "evil.npz")
    assert "not an NPZ" in e.message


def test_npy_instead_of_npz(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.ones((3, 2)))
    assert "single .npy" in error(tmp_path, buf.getvalue(), "d.npz").message


def test_npz_missing_array_names_it_and_lists_present(tmp_path):
    e = error(tmp_path, npz_bytes(X=np.ones((4, 2)), labels=np.zeros(4)), "d.npz")
    assert "no array 'y'" in e.message and "['X', 'labels']" in e.message


@pytest.mark.parametrize("X, words", [(np.ones(5), "N×F or N×C×H×W"), (np.ones((5, 2, 3)), "N×F or N×C×H×W"),
                                      (np.array([["a", "b"]] * 5), "must be numeric")])
def test_npz_bad_X(tmp_path, X, words):
    e = error(tmp_path, npz_bytes(X=X, y=np.arange(5) % 2), "d.npz")
    assert words in e.message and "'X'" in e.message


def test_npz_length_mismatch(tmp_path):
    e = error(tmp_path, npz_bytes(X=np.ones((5, 2)), y=np.zeros(4)), "d.npz")
    assert "'y'" in e.message and "(4,)" in e.message and "5 rows" in e.message


def test_npz_non_finite_X_names_the_first_bad_index(tmp_path):
    X = np.ones((5, 3))
    X[2, 1] = np.nan
    X[4, 0] = np.inf
    e = error(tmp_path, npz_bytes(X=X, y=np.arange(5) % 2), "d.npz")
    assert "X[2, 1]" in e.message and "nan" in e.message


def test_npz_float64_beyond_float32_range(tmp_path):
    X = np.ones((4, 2))
    X[1, 1] = 1e300
    assert "X[1, 1]" in error(tmp_path, npz_bytes(X=X, y=np.arange(4) % 2), "d.npz").message


def test_npz_expansion_limit(tmp_path):
    buf = io.BytesIO()
    np.savez_compressed(buf, X=np.zeros((2000, 100)), y=np.arange(2000) % 2)
    e = error(tmp_path, buf.getvalue(), "d.npz", limits=Limits(max_bytes=100_000))
    assert e.status == 413 and "expands" in e.message


@pytest.mark.parametrize("offset", [100, 1000])
def test_damaged_compressed_npz_is_a_clear_422(tmp_path, offset):
    buf = io.BytesIO()
    np.savez_compressed(buf, X=np.random.default_rng(0).random((100, 10)), y=np.arange(100) % 2)
    damaged = bytearray(buf.getvalue())
    for k in range(offset, offset + 50):
        damaged[k] ^= 0xFF
    e = error(tmp_path, bytes(damaged), "d.npz")
    assert e.status == 422 and "not a readable NPZ archive" in e.message


def test_csv_feature_beyond_float32_range_names_row_and_column(tmp_path):
    e = error(tmp_path, csv_bytes(["a", "b", "t"], [[1, 2, 0], [3, 1e39, 1], [5, 6, 0], [7, 8, 1]]))
    assert "line 3" in e.message and "'b'" in e.message and "float32" in e.message   # the file's line now


def test_npz_regression_y_non_finite_names_the_index(tmp_path):
    y = np.ones((6, 2))
    y[3, 1] = np.inf
    e = error(tmp_path, npz_bytes(X=np.ones((6, 3)), y=y), "d.npz", task="regression")
    assert "y[3, 1]" in e.message
