"""POST/GET/DELETE /v1/datasets over HTTP: stored form, inference, every refusal a 4xx that says where."""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import safetensors.numpy

from core import artifacts
from core.tables import Job

from conftest import csv_bytes, iris_like, npz_bytes


def msg(r) -> str:
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else " | ".join(e["msg"] for e in detail)


def test_upload_csv_stores_safetensors_and_answers_201_with_location(svc):
    r = svc.upload(iris_like(12), "iris.csv")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert r.headers["location"] == f"/v1/datasets/{ds['id']}"
    assert ds["name"] == "iris.csv" and ds["format"] == "csv" and ds["task"] == "classification"
    assert ds["n_rows"] == 12 and ds["input_shape"] == [4] and ds["n_outputs"] == 3
    assert ds["classes"] == ["setosa", "versicolor", "virginica"] and ds["target"] == "species"
    assert ds["feature_names"] == ["a", "b", "c", "d"] and ds["size_bytes"] == len(iris_like(12))
    stored = safetensors.numpy.load_file(artifacts.resolve(svc.settings, artifacts.dataset_relpath(ds["id"])))
    assert stored["X"].shape == (12, 4) and stored["X"].dtype == np.float32
    assert stored["y"].tolist() == [2, 0, 1] * 4     # virginica, setosa, versicolor by sorted class id
    assert svc.client.get(r.headers["location"], headers=svc.a).json() == ds
    assert not list((svc.settings.data_dir / "uploads").iterdir())  # the raw upload is not kept


def test_form_fields_name_target_task(svc):
    content = csv_bytes(["y", "a", "b"], [[i % 2, i, 2 * i] for i in range(8)])
    ds = svc.dataset(content, "t.csv", name="my data", target="y", task="regression")
    assert (ds["name"], ds["target"], ds["task"], ds["n_outputs"], ds["classes"]) == \
        ("my data", "y", "regression", 1, None)
    assert svc.dataset(content, "t.csv", target="y")["task"] == "classification"


def test_upload_npz_images(svc):
    X = np.random.default_rng(0).normal(size=(8, 3, 5, 5)).astype(np.float32)
    ds = svc.dataset(npz_bytes(X=X, y=np.arange(8) % 4), "img.npz")
    assert ds["format"] == "npz" and ds["input_shape"] == [3, 5, 5] and ds["classes"] == [0, 1, 2, 3]


@pytest.mark.parametrize("content, filename, fields, status, loc, words", [
    (b"1,2,3\n4,5,6\n7,8,9\n", "d.csv", {}, 422, "file", "no header row"),
    (b"a,b,t\n1,2,0\n3,4\n", "d.csv", {}, 422, "file", "line 3 has 2 columns; the header has 3"),
    (b"a,b,t\n1,x,0\n3,4,1\n", "d.csv", {}, 422, "file", "line 2, column 'b'"),
    (b"a,b,t\n1,,0\n3,4,1\n", "d.csv", {}, 422, "file", "line 2, column 'b': the cell is empty"),
    (b"a,b,t\n1,nan,0\n3,4,1\n", "d.csv", {}, 422, "file", "not finite"),
    (b"a,b,t\n1,2,0\n3,inf,1\n", "d.csv", {}, 422, "file", "line 3, column 'b'"),
    (b"a,b,t\n1,2,0\n3,4,1\n", "d.csv", {"target": "label"}, 422, "target", "available columns: ['a', 'b', 't']"),
    (b"a,t\n1,0\n", "d.csv", {}, 422, "file", "at least 2"),
    (b"a,t\n1,0\n2,0\n3,0\n", "d.csv", {"task": "classification"}, 422, "target", "single class"),
    (b"a,t\n1,0\n2,1\n", "d.csv", {"task": "clustering"}, 422, "task", "'clustering' is not one of"),
    (b"a,t\n1,0\n2,1\n", "d.csv", {"colour": "red"}, 422, "colour", "unknown form field"),
    (pickle.dumps([1, 2, 3]), "evil.npz", {}, 422, "file", "not an NPZ"),
    (npz_bytes(X=np.ones((3, 2)), labels=np.zeros(3)), "d.npz", {}, 422, "file", "no array 'y'"),
    (npz_bytes(X=np.ones(3), y=np.zeros(3)), "d.npz", {}, 422, "file", "N×F or N×C×H×W"),
    (npz_bytes(X=np.ones((3, 2)), y=np.zeros(2)), "d.npz", {}, 422, "file", "length must equal X's 3 rows"),
])
def test_bad_dataset_is_a_4xx_naming_the_place(svc, content, filename, fields, status, loc, words):
    r = svc.upload(content, filename, **fields)
    assert r.status_code == status, r.text
    assert words in msg(r)
    assert r.json()["detail"][0]["loc"] == ["body", loc]


def test_object_array_npz(svc):
    buf = io.BytesIO()
    np.savez(buf, X=np.array([[1, "a"], [2, None]], dtype=object), y=np.array([0, 1]))
    r = svc.upload(buf.getvalue(), "d.npz")
    assert r.status_code == 422 and "Python objects (they need pickle)" in msg(r)


def test_npz_nan_names_array_and_index(svc):
    X = np.zeros((4, 3))
    X[3, 2] = np.inf
    r = svc.upload(npz_bytes(X=X, y=np.array([0, 1, 0, 1])), "d.npz")
    assert r.status_code == 422 and "X[3, 2]" in msg(r)


def test_oversize_upload_is_413_and_leaves_nothing_behind(service_factory):
    svc = service_factory(max_upload_bytes=1000)
    big = csv_bytes(["a", "t"], [[i, i % 2] for i in range(500)])
    assert len(big) > 1000
    r = svc.upload(big)
    assert r.status_code == 413 and "1000 bytes" in msg(r)
    assert not list((svc.settings.data_dir / "uploads").iterdir())
    assert svc.upload(csv_bytes(["a", "t"], [[i, i % 2] for i in range(10)])).status_code == 201


def test_row_limit(service_factory):
    svc = service_factory(max_rows=5)
    r = svc.upload(csv_bytes(["a", "t"], [[i, i % 2] for i in range(6)]))
    assert r.status_code == 413 and "the limit is 5" in msg(r)


def test_not_multipart_and_missing_file(svc):
    r = svc.client.post("/v1/datasets", headers=svc.a, json={"file": "a,b"})
    assert r.status_code == 415 and "multipart/form-data" in msg(r)
    r = svc.client.post("/v1/datasets", headers=svc.a, data={"name": "x"}, files={"other": ("x", b"")})
    assert r.status_code == 422
    r = svc.client.post("/v1/datasets", headers=svc.a, data={"name": "x"},
                        files={"name2": (None, b"v")})
    assert r.status_code == 422 and "'file' is required" in msg(r)


def test_list_paginates_newest_first_and_caps_limit(svc):
    ids = [svc.dataset(iris_like(), f"d{i}.csv")["id"] for i in range(3)]
    page = svc.client.get("/v1/datasets?limit=2", headers=svc.a).json()
    assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 0
    assert [d["id"] for d in page["items"]] == ids[::-1][:2]
    rest = svc.client.get("/v1/datasets?limit=2&offset=2", headers=svc.a).json()
    assert [d["id"] for d in rest["items"]] == ids[:1]
    for bad in ("limit=1000", "limit=0", "offset=-1", "limit=abc"):
        r = svc.client.get(f"/v1/datasets?{bad}", headers=svc.a)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "query"


def test_delete_removes_row_and_file_but_not_while_jobs_are_active(svc, iris):
    path = artifacts.resolve(svc.settings, artifacts.dataset_relpath(iris["id"]))
    job = svc.submit(iris["id"]).json()
    r = svc.client.delete(f"/v1/datasets/{iris['id']}", headers=svc.a)
    assert r.status_code == 409 and "1 queued or running" in msg(r)
    assert svc.client.post(f"/v1/jobs/{job['id']}/cancel", headers=svc.a).json()["status"] == "cancelled"
    assert svc.client.delete(f"/v1/datasets/{iris['id']}", headers=svc.a).status_code == 204
    assert not path.exists()
    assert svc.client.get(f"/v1/datasets/{iris['id']}", headers=svc.a).status_code == 404
    assert svc.client.delete(f"/v1/datasets/{iris['id']}", headers=svc.a).status_code == 404
    with svc.session() as s:  # the job stays, its dataset link cleared
        assert s.get(Job, job["id"]).dataset_id is None
    assert svc.client.get(f"/v1/jobs/{job['id']}", headers=svc.a).json()["dataset_id"] is None
