"""Hostile inputs get the same 4xx on SQLite and on PostgreSQL, never a 500 (issue 8, points 3 and 8):
NUL bytes in ids and names, ids that are not ids, over-long column names, NaN / Infinity in JSON,
an NPZ whose members are not .npy arrays."""
from __future__ import annotations

import io
import zipfile

import pytest

from conftest import csv_bytes, iris_like

NUL_ID_REQUESTS = [
    ("GET", "/v1/jobs/%00"), ("GET", "/v1/jobs/%00/metrics"), ("POST", "/v1/jobs/%00/cancel"),
    ("GET", "/v1/jobs/%00/weights"), ("POST", "/v1/jobs/%00/predict"), ("DELETE", "/v1/jobs/%00"),
    ("GET", "/v1/datasets/%00"), ("DELETE", "/v1/datasets/%00"), ("GET", "/v1/jobs/not-an-id"),
]


def _answers(svc) -> list[tuple[int, str]]:
    """(status, first message) of every hostile request, in order."""
    ds = svc.dataset(iris_like(), "iris.csv")
    out = []
    for method, url in NUL_ID_REQUESTS:
        body = {"inputs": [[1, 2, 3, 4]]} if url.endswith("predict") else None
        out.append(svc.client.request(method, url, headers=svc.a, json=body))
    out.append(svc.submit("\x00"))
    out.append(svc.submit(ds["id"][:-1] + "\x00"))
    out.append(svc.upload(iris_like(), "iris.csv", name="bad\x00name"))
    raw = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"iris\x00.csv\"\r\n\r\n"
           + iris_like() + b"\r\n--b--\r\n")   # a NUL in the file name, as httpx would not send it
    out.append(svc.client.post("/v1/datasets", headers={**svc.a, "Content-Type": "multipart/form-data; boundary=b"},
                               content=raw))
    long_target = "t" * 201
    out.append(svc.upload(csv_bytes(["a", "b", long_target], [[1, 2, i % 2] for i in range(6)]), "long.csv"))
    return [(r.status_code, _first_message(r) if r.status_code >= 400 else r.text[:80]) for r in out]


def _first_message(r) -> str:
    detail = r.json()["detail"]
    return detail[0]["msg"] if isinstance(detail, list) else detail


def test_nul_bytes_malformed_ids_and_long_names_are_4xx_alike_on_both_databases(any_svc):
    answers = _answers(any_svc)
    statuses = [status for status, _ in answers]
    assert statuses == [422] * len(statuses), answers
    assert "ids are UUIDs" in answers[0][1] and "ids are UUIDs" in answers[len(NUL_ID_REQUESTS)][1]
    assert "control character" in answers[-3][1] and "control character" in answers[-2][1]
    assert "201 characters" in answers[-1][1] and "at most 200" in answers[-1][1]


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_in_json_are_422_invalid_json(any_svc, literal):
    svc = any_svc
    ds = svc.dataset(iris_like(), "iris.csv")
    body = (b'{"dataset_id": "%s", "model": {"layers": [{"type": "linear", "out_features": 3}]}, '
            b'"loss": "cross_entropy", "optimizer": {"type": "adam", "lr": %s}}' % (ds["id"].encode(), literal))
    r = svc.client.post("/v1/jobs", headers={**svc.a, "Content-Type": "application/json"}, content=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["type"] == "json_invalid"


def _zip(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("members", [
    {"X.npy": b"hi", "y.npy": b"hi"},
    {"X.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 'x'}   \n", "y.npy": b"hi"},
])
def test_an_npz_member_that_is_not_a_npy_array_is_422_naming_it(svc, members):
    r = svc.upload(_zip(**members), "data.npz")
    assert r.status_code == 422, r.text
    assert "'X'" in _first_message(r)


def test_an_npz_is_limited_by_what_its_arrays_expand_to(service_factory):
    """A 12 kB archive of zeros that expands to 12 MB (10,000 x 150 float64) is a 413 on a 4 MB upload
    limit, refused from its .npy header before the array is allocated."""
    import numpy as np

    from conftest import npz_bytes

    svc = service_factory(max_upload_bytes=4_000_000)
    body = io.BytesIO()
    np.savez_compressed(body, X=np.zeros((10_000, 150)), y=np.zeros(10_000))
    assert len(body.getvalue()) < 100_000
    r = svc.upload(body.getvalue(), "bomb.npz")
    assert r.status_code == 413 and "expands to more than the upload limit of 4000000" in _first_message(r)
    ok = svc.upload(npz_bytes(X=np.ones((1000, 4)), y=np.arange(1000) % 2), "fine.npz")
    assert ok.status_code == 201, ok.text
