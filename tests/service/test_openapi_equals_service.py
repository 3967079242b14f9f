"""The OpenAPI document says what the service does (issue 20): 405s list every allowed method,
integers are integers (3.0 is refused where the schema says integer)."""
from __future__ import annotations

import pytest


def test_a_405_allows_every_method_of_the_path(svc, iris):
    job = svc.submit(iris["id"]).json()
    r = svc.client.put(f"/v1/jobs/{job['id']}", headers=svc.a)
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"
    assert "allowed: DELETE, GET" in r.json()["detail"]
    r = svc.client.delete("/v1/jobs", headers=svc.a)
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    schema = svc.client.get("/openapi.json").json()
    assert sorted(m.upper() for m in schema["paths"]["/v1/jobs"]) == ["GET", "POST"]


@pytest.mark.parametrize("override, loc", [({"epochs": 3.0}, ["body", "epochs"]),
                                           ({"batch_size": 4.0}, ["body", "batch_size"]),
                                           ({"model": {"layers": [{"type": "linear", "out_features": 3.0}]}},
                                            ["body", "model", "layers", 0, "linear", "out_features"])])
def test_a_float_where_an_integer_is_meant_is_422(svc, iris, override, loc):
    r = svc.submit(iris["id"], **override)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc and "without a decimal point" in r.json()["detail"][0]["msg"]
    assert svc.submit(iris["id"], **{k: v for k, v in {"epochs": 3, "batch_size": 4}.items()
                                     if k in override}).status_code == 202


@pytest.mark.parametrize("query", ["limit=3.0", "limit=3e0", "offset=0.0"])
def test_a_float_in_an_integer_query_is_422(svc, query):
    r = svc.client.get(f"/v1/jobs?{query}", headers=svc.a)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "query", r.text
    assert svc.client.get("/v1/jobs?limit=3&offset=0", headers=svc.a).status_code == 200
