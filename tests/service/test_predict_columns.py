"""Predict from a copy of the training CSV: the target column left in is named, as are the columns
the model expects; with the CSV's header as `columns`, rows are matched to the features by name."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import csv_bytes, finish, npz_bytes

FEATURES = ["a", "b", "c", "d"]
ROWS = np.random.default_rng(3).normal(size=(3, 4)).round(3).tolist()


@pytest.fixture
def job(svc, iris):
    """A succeeded job on iris-like data (features a, b, c, d; target species) and its engine model."""
    job = svc.submit(iris["id"]).json()
    return job, finish(svc, job, iris["input_shape"])


def predict(svc, job_id: str, **body):
    return svc.client.post(f"/v1/jobs/{job_id}/predict", headers=svc.a, json=body)


def problem(r) -> tuple[list, str]:
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    return error["loc"], error["msg"]


def test_rows_with_the_target_still_in_name_it_and_the_expected_columns(svc, job):
    job, _ = job
    loc, msg = problem(predict(svc, job["id"], inputs=[row + ["setosa"] for row in ROWS]))
    assert loc == ["body", "inputs"]
    assert "inputs[0] has 5 values; the model takes the dataset's 4 feature columns ['a', 'b', 'c', 'd']" in msg
    assert "is the target column 'species' still in the row?" in msg
    loc, msg = problem(predict(svc, job["id"], inputs=[row[:3] for row in ROWS]))
    assert "inputs[0] has 3 values" in msg and "['a', 'b', 'c', 'd']" in msg and "species" not in msg


def test_the_csv_header_as_columns_names_the_target_column(svc, job):
    job, _ = job
    loc, msg = problem(predict(svc, job["id"], inputs=[row + [0] for row in ROWS], columns=FEATURES + ["species"]))
    assert loc == ["body", "columns"]
    assert msg == ("columns: 'species' is the dataset's target column (what the model predicts), not an input; "
                   "the model takes the dataset's 4 feature columns ['a', 'b', 'c', 'd']")


@pytest.mark.parametrize("columns, words", [
    (["a", "b", "c", "x", "y"], "columns: ['x', 'y'] are not among its feature columns; missing ['d']"),
    (["a", "b", "c"], "columns: missing ['d']; the model takes the dataset's 4 feature columns"),
    (["a", "b", "c", "d", "a"], "columns: ['a'] appear more than once"),
])
def test_unknown_missing_and_repeated_columns_are_named(svc, job, columns, words):
    job, _ = job
    loc, msg = problem(predict(svc, job["id"], inputs=[[1.0] * len(columns)], columns=columns))
    assert loc == ["body", "columns"] and words in msg, msg


def test_columns_in_another_order_are_matched_by_name(svc, job):
    job, model = job
    order = ["c", "a", "d", "b"]
    shuffled = [[row[FEATURES.index(name)] for name in order] for row in ROWS]
    r = predict(svc, job["id"], inputs=shuffled + [[1, 2, 3]], columns=order)
    loc, msg = problem(r)
    assert loc == ["body", "inputs"] and msg == "inputs[3] has 3 values; columns names 4"
    r = predict(svc, job["id"], inputs=shuffled, columns=order)
    assert r.status_code == 200, r.text
    expected = model.forward(torch.tensor(ROWS, dtype=torch.float32), training=False)
    np.testing.assert_allclose(r.json()["outputs"], expected.numpy(), rtol=1e-5)
    assert r.json() == predict(svc, job["id"], inputs=ROWS).json()


def test_columns_need_a_csv_dataset_that_still_exists(svc, job):
    job, _ = job
    assert svc.client.delete(f"/v1/datasets/{job['dataset_id']}", headers=svc.a).status_code == 204
    loc, msg = problem(predict(svc, job["id"], inputs=ROWS, columns=FEATURES))
    assert loc == ["body", "columns"] and "the job's dataset was deleted" in msg
    assert predict(svc, job["id"], inputs=ROWS).status_code == 200      # rows in training order still work

    X = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    ds = svc.dataset(npz_bytes(X=X, y=np.arange(12) % 3), "blobs.npz")
    npz_job = svc.submit(ds["id"]).json()
    finish(svc, npz_job, ds["input_shape"])
    loc, msg = problem(predict(svc, npz_job["id"], inputs=ROWS, columns=FEATURES))
    assert msg == "columns: the job's dataset (npz, input_shape [4]) has no named feature columns; send rows " \
                  "without columns"
    loc, msg = problem(predict(svc, npz_job["id"], inputs=[row + [0] for row in ROWS]))
    assert msg.startswith("inputs[0] has shape (5,); expected (4,)")      # no names to tell


def test_a_sequence_classifier_csv_is_not_a_table_of_features(svc):
    """Its feature_names is its text column: rows of ids are not checked against it."""
    rows = [[f"text number {i}", i % 2] for i in range(12)]
    ds = svc.dataset(csv_bytes(["text", "label"], rows), "texts.csv", text_column="text")
    assert ds["feature_names"] == ["text"] and ds["input_shape"][0] > 1
    model = {"layers": [{"type": "embedding", "num_embeddings": 257, "embedding_dim": 4},
                        {"type": "seq_pool", "mode": "mean"}, {"type": "linear", "out_features": 2}]}
    job = svc.submit(ds["id"], model=model).json()
    finish(svc, job, ds["input_shape"])
    assert predict(svc, job["id"], inputs=[[1] * ds["input_shape"][0]]).status_code == 200
