"""Probes, the OpenAPI document Swagger renders, and the promise that no user input is a 500."""
from __future__ import annotations

import json

from typing import get_args

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from engine.layers import _REGISTRY
from engine.spec import LayerSpec

from conftest import finish, iris_like


def test_healthz_needs_no_database(tmp_path):
    from core.settings import Settings
    app = create_app(Settings(data_dir=tmp_path, database_url="sqlite:////proc/no/such/db.sqlite"))
    r = TestClient(app).get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_checks_database_and_embedded_broker(svc):
    r = svc.client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "broker": "ok", "disk": "ok"}


def test_readyz_names_what_failed(service_factory, tmp_path):
    svc = service_factory(broker_url="redis://127.0.0.1:1/0")
    r = svc.client.get("/readyz")
    assert r.status_code == 503 and r.json()["detail"] == "not ready: broker"
    assert r.json()["checks"] == {"database": "ok", "broker": "unavailable", "disk": "ok"}
    assert "127.0.0.1" not in r.text and "Error" not in r.text     # no address, no exception text

    svc = service_factory()
    svc.settings.broker_dir.mkdir(parents=True, exist_ok=True)
    (svc.settings.broker_dir / "queue").rmdir() if (svc.settings.broker_dir / "queue").is_dir() else None
    (svc.settings.broker_dir / "queue").write_text("not a directory")
    r = svc.client.get("/readyz")
    assert r.status_code == 503 and r.json()["detail"] == "not ready: broker"

    from core.settings import Settings
    app = create_app(Settings(data_dir=tmp_path / "x", database_url="sqlite:////proc/no/such/db.sqlite"))
    r = TestClient(app).get("/readyz")
    assert r.status_code == 503 and r.json()["detail"] == "not ready: database"


def test_openapi_lists_the_layer_catalogue_and_the_bearer_scheme(svc):
    schema = svc.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "An API key from `chainrule keys create NAME`."}
    text = json.dumps(schema)
    union = get_args(LayerSpec)[0]
    types = [get_args(m.model_fields["type"].annotation)[0] for m in get_args(union)]
    assert set(types) == set(_REGISTRY) and "conv2d" in types   # every spec type has a layer, and back
    mapping = {}
    for comp in schema["components"]["schemas"].values():
        for prop in comp.get("properties", {}).values():
            items = prop.get("items", {})
            if "discriminator" in items:
                mapping.update(items["discriminator"]["mapping"])
    assert set(types) <= set(mapping), set(types) - set(mapping)
    for path, ops in schema["paths"].items():
        for op in ops.values():
            if path.startswith("/v1"):
                assert {"HTTPBearer": []} in op["security"], path
    upload = schema["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["properties"]["file"]["format"] == "binary"
    assert schema["components"]["schemas"]["JobSubmit"]["examples"]
    assert "cross_entropy" in text and "adamw" in text


def test_swagger_ui_is_served(svc):
    r = svc.client.get("/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text


def test_no_user_input_gives_a_500(svc, iris):
    client = TestClient(svc.client.app, raise_server_exceptions=False)
    a = svc.a
    job = svc.submit(iris["id"]).json()
    finish(svc, job, iris["input_shape"])
    jid, did = job["id"], iris["id"]
    junk = [
        ("POST", "/v1/jobs", {"content": b"\xff\xfe\x00"}),
        ("POST", "/v1/jobs", {"content": b"{" * 5000}),
        ("POST", "/v1/jobs", {"content": b"[" * 100000 + b"]" * 100000}),
        ("POST", "/v1/jobs", {"json": {"dataset_id": did, "model": {"layers": []}, "loss": "mse"}}),
        ("POST", "/v1/jobs", {"json": {"dataset_id": did, "model": {"layers": [{"type": "linear",
                              "out_features": 3, "inputs": ["input"]}, {"type": "add", "inputs": ["0"]}]},
                              "loss": "cross_entropy"}}),
        ("POST", "/v1/jobs", {"json": {"dataset_id": did, "model": {"layers": [{"type": "maxpool2d",
                              "kernel_size": 2}]}, "loss": "cross_entropy"}}),
        ("POST", "/v1/jobs", {"json": {"dataset_id": did, "model": {"layers": [{"type": "layernorm"},
                              {"type": "concat", "dim": 5, "inputs": ["0", "input"], "name": "c"}]},
                              "loss": "cross_entropy"}}),
        ("POST", "/v1/jobs", {"json": {"dataset_id": did, "model": {"layers": [{"type": "linear",
                              "out_features": 3}]}, "loss": {"type": "huber", "delta": -1}}}),
        ("POST", "/v1/jobs", {"json": {"dataset_id": did, "model": {"layers": [{"type": "flatten",
                              "start_dim": 7}, {"type": "linear", "out_features": 3}]}, "loss": "cross_entropy"}}),
        ("POST", "/v1/jobs", {"json": {"dataset_id": did, "model": {"layers": [{"type": "linear",
                              "out_features": 3}]}, "loss": "cross_entropy", "seed": -1, "dtype": "int8"}}),
        ("POST", "/v1/jobs", {"json": {"dataset_id": "x" * 10000, "model": {}, "loss": None}}),
        ("POST", f"/v1/jobs/{jid}/predict", {"content": b'{"inputs": [[1e400, 0, 0, 0]]}'}),
        ("POST", f"/v1/jobs/{jid}/predict", {"json": {"outputs": 1}}),
        ("POST", f"/v1/jobs/{jid}/predict", {"json": {"inputs": [[[[[[1]]]]]] * 3}}),
        ("POST", f"/v1/jobs/{jid}/predict", {"json": {"inputs": [[10**400, 1, 2, 3]]}}),
        ("POST", f"/v1/jobs/{jid}/predict", {"json": {"inputs": [{"a": 1}]}}),
        ("POST", f"/v1/jobs/{jid}/predict", {"json": {"inputs": [[]]}}),
        ("POST", f"/v1/jobs/{jid}/cancel", {"json": {"why": "because"}}),
        ("GET", "/v1/jobs/%00", {}),
        ("GET", "/v1/jobs/" + "a" * 5000, {}),
        ("GET", "/v1/jobs?status=&limit=&offset=", {}),
        ("GET", "/v1/jobs?offset=99999999999999999999", {}),
        ("GET", "/v1/datasets/../../etc/passwd", {}),
        ("DELETE", "/v1/jobs/" + jid, {}),
        ("POST", "/v1/datasets", {"content": b"garbage", "headers": {"Content-Type": "multipart/form-data"}}),
        ("POST", "/v1/datasets", {"content": b"--b\r\nbroken", "headers": {
            "Content-Type": "multipart/form-data; boundary=b"}}),
        ("POST", "/v1/datasets", {"content": b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
                                             b"filename=\"x.csv\"\r\n\r\na,b\r\n1,2\r\n--b--\r\n",
                                  "headers": {"Content-Type": "multipart/form-data; boundary=b"}}),
        ("POST", "/v1/datasets", {"files": {"file": ("x.csv", b"a,b\n" + b"1," * 200000 + b"\n")}}),
        ("POST", "/v1/datasets", {"files": {"file": ("x.csv", b'a,b\n"1,2\n')}}),
        ("POST", "/v1/datasets", {"files": {"file": ("x.npz", b"PK\x03\x04broken zip")}}),
        ("POST", "/v1/datasets", {"files": {"file": ("x.csv", b"a,b\n1,2\n3,4\n")}, "data": {"target": "a" * 5000}}),
        ("POST", "/v1/datasets", {"files": {"file": ("x.csv", iris_like())}, "data": {"task": "regression"}}),
    ]
    for method, url, kw in junk:
        headers = {**a, **kw.pop("headers", {})}
        if "content" in kw and "Content-Type" not in headers:
            headers["Content-Type"] = "application/json"
        r = client.request(method, url, headers=headers, **kw)
        assert r.status_code < 500, (method, url, r.status_code, r.text[:300])
        assert r.status_code < 400 or "detail" in r.json(), (method, url, r.text[:300])


@pytest.mark.parametrize("path", ["/", "/v1", "/v2/jobs", "/v1/jobs/x/y/z"])
def test_unknown_routes_are_json_404(svc, path):
    r = svc.client.get(path, headers=svc.a)
    assert r.status_code == 404 and "no route" in r.json()["detail"]


def test_oversize_bodies_are_json_413_declared_or_chunked(service_factory):
    """A JSON body has its own limit (max_json_bytes), far below an upload's."""
    svc = service_factory(max_upload_bytes=1000, max_json_bytes=5000)
    limit = 5000
    big = b'{"inputs": [' + b"1," * limit + b"1]}"
    r = svc.client.post("/v1/jobs", headers={**svc.a, "Content-Type": "application/json"}, content=big)
    assert r.status_code == 413 and f"the limit is {limit}" in r.json()["detail"]

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]
    r = svc.client.post("/v1/jobs", headers={**svc.a, "Content-Type": "application/json"}, content=chunks())
    assert r.status_code == 413 and f"exceeds the limit of {limit}" in r.json()["detail"]
    r = svc.client.post("/v1/datasets", headers=svc.a, files={"file": ("d.csv", b"a,t\n" + b"1,0\n" * 300)})
    assert r.status_code == 413 and "upload limit of 1000 bytes" in r.json()["detail"]
