"""Bounded answers (issue 20): every error body under 8 KB whatever the request held, an NPZ of
thousands of members refused from its zip directory's count, a refused dtype named with what is
allowed, and names free of format characters (bidi overrides, zero-width)."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from api.errors import MAX_ERROR_BYTES

from conftest import npz_bytes


def _many_member_npz(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"member_{i:06d}_" + "x" * 60 + ".npy", b"")
    return buf.getvalue()


def test_an_npz_of_thousands_of_members_is_refused_by_its_count_in_a_small_answer(svc):
    r = svc.upload(_many_member_npz(5000), "many.npz")
    assert r.status_code == 413, r.text
    assert "5000 files" in r.text and "at most 64" in r.text and len(r.content) < 1024


def test_an_npz_without_x_lists_a_few_members_not_all(svc):
    r = svc.upload(npz_bytes(**{f"a{i}" + "z" * 100: np.zeros(2) for i in range(40)}, y=np.zeros(2)), "d.npz")
    assert r.status_code == 422 and "no array 'X'" in r.text and len(r.content) < 2048


@pytest.mark.parametrize("dtype, says", [(np.complex64, "complex64 (complex numbers)"),
                                         ("datetime64[s]", "datetime64[s] (dates)")])
def test_a_refused_dtype_is_named_with_what_is_allowed(svc, dtype, says):
    r = svc.upload(npz_bytes(X=np.ones((4, 2)).astype(dtype), y=np.array([0, 1, 0, 1])), "d.npz")
    message = r.json()["detail"][0]["msg"]
    assert r.status_code == 422 and says in message and "allowed: bool, integers and floats" in message
    assert "pickle" not in message


def test_error_bodies_stay_under_8_kb(svc, iris):
    path = "/v1/" + "a" * 20_000
    assert svc.client.get(path, headers=svc.a).status_code == 404
    assert len(svc.client.get(path, headers=svc.a).content) < MAX_ERROR_BYTES
    layers = [{"type": "linear", "out_features": -i, "init": "x" * 500} for i in range(1, 1000)]
    r = svc.submit(iris["id"], model={"layers": layers})
    assert r.status_code == 422 and len(r.content) < MAX_ERROR_BYTES
    detail = r.json()["detail"]
    assert detail[0]["loc"][:3] == ["body", "model", "layers"] and detail[-1]["type"] == "too_many_errors"
    assert "more problems not listed" in detail[-1]["msg"]
    predict = svc.client.post(f"/v1/jobs/{'0' * 8}-0000-0000-0000-{'0' * 12}/predict", headers=svc.a,
                              json={"inputs": [[1.0] * 4] * 5, "extra": "y" * 100_000})
    assert predict.status_code == 422 and len(predict.content) < MAX_ERROR_BYTES


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\u2066", "\ufeff"])
def test_names_refuse_format_characters(svc, iris, char):
    r = svc.submit(iris["id"], name=f"good{char}name")
    assert r.status_code == 422 and f"U+{ord(char):04X}" in r.text and "format character" in r.text
    r = svc.upload(b"a,b\n1,0\n2,1\n3,0\n4,1\n", "d.csv", name=f"evil{char}txt.exe")
    assert r.status_code == 422 and f"U+{ord(char):04X}" in r.text, r.text
