"""POST /v1/gradcheck: synchronous, in float64, on random inputs or a dataset's rows; every limit is a
4xx that names it; another key's dataset is a 404."""
from __future__ import annotations

import pytest

from conftest import iris_like

pytestmark = pytest.mark.timeout(120)
NET = {"layers": [{"type": "linear", "out_features": 16}, {"type": "tanh"},
                  {"type": "linear", "out_features": 8}, {"type": "relu"}, {"type": "linear", "out_features": 3}]}


def check(svc, headers=None, **body):
    return svc.client.post("/v1/gradcheck", headers=headers or svc.a,
                           json={"model": NET, "loss": "cross_entropy", "input_shape": [4], **body})


def test_a_network_on_random_inputs_passes_layer_by_layer(svc):
    r = check(svc, batch_size=4, seed=3)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["passed"] and report["dtype"] == "float64" and report["tolerance"] == 1e-6
    assert [(layer["key"], layer["type"]) for layer in report["layers"]] == [("0", "linear"), ("2", "linear"),
                                                                             ("4", "linear")]
    for layer in report["layers"]:
        assert layer["status"] == "passed" and layer["max_relative_error"] <= 1e-6
        assert [t["name"] for t in layer["tensors"]] == [f"{layer['key']}.weight", f"{layer['key']}.bias"]
        assert layer["worst"]["tensor"].startswith(layer["key"] + ".")
    weight = report["layers"][0]["tensors"][0]
    assert weight["shape"] == [16, 4] and weight["checked"] == 32 and weight["of"] == 64
    assert report["input"]["name"] == "input" and report["input"]["checked"] == 16      # batch 4 x 4 features
    assert check(svc, batch_size=4, seed=3).json()["layers"][0]["worst"] == report["layers"][0]["worst"]


def test_rows_of_a_dataset_and_a_regression_loss(svc):
    ds = svc.dataset(iris_like(), "iris.csv")
    r = svc.client.post("/v1/gradcheck", headers=svc.a, json={
        "model": NET, "loss": {"type": "cross_entropy", "label_smoothing": 0.1}, "dataset_id": ds["id"],
        "batch_size": 6})
    assert r.status_code == 200 and r.json()["passed"] and r.json()["batch_size"] == 6
    r = check(svc, loss={"type": "huber", "delta": 0.5},
              model={"layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": 3}, {"type": "batchnorm"},
                                {"type": "gelu"}, {"type": "flatten"}, {"type": "linear", "out_features": 2}]},
              input_shape=[1, 5, 5], batch_size=3)
    assert r.status_code == 200 and r.json()["passed"]
    assert svc.client.post("/v1/gradcheck", headers=svc.b, json={
        "model": NET, "loss": "cross_entropy", "dataset_id": ds["id"]}).status_code == 404


@pytest.mark.parametrize("body, setting", [
    ({"batch_size": 65}, "gradcheck_max_batch_size"),
    ({"coordinates": 257}, "gradcheck_max_coordinates"),
    ({"model": {"layers": [{"type": "linear", "out_features": 400}, {"type": "relu"},
                           {"type": "linear", "out_features": 300}, {"type": "relu"},
                           {"type": "linear", "out_features": 3}]}}, "gradcheck_max_parameters"),
    ({"input_shape": [3, 1000, 1000], "model": {"layers": [{"type": "conv2d", "out_channels": 1, "kernel_size": 1},
                                                          {"type": "flatten"}, {"type": "linear", "out_features": 3,
                                                                                "bias": False}]}},
     "gradcheck_max_parameters"),
])
def test_limits_are_422s_that_name_them(svc, body, setting):
    r = check(svc, **body)
    assert r.status_code == 422, r.text
    (problem,) = r.json()["detail"]
    assert problem["type"] == "limit_exceeded" and setting in problem["msg"]


def test_memory_and_time_limits(service_factory):
    svc = service_factory(gradcheck_max_memory_bytes=1024**2, gradcheck_time_limit_s=0.001)
    r = check(svc, input_shape=[3, 100, 100], batch_size=8,
              loss="mse", model={"layers": [{"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
                                            {"type": "avgpool2d", "kernel_size": 100}, {"type": "flatten"}]})
    assert r.status_code == 422 and "gradcheck_max_memory_bytes" in r.text and "batch_size" in r.text
    r = check(svc)
    assert r.status_code == 422 and "gradcheck_time_limit_s" in r.text and "would take about" in r.text


def test_what_cannot_be_checked_is_a_422_that_says_why(svc):
    r = svc.client.post("/v1/gradcheck", headers=svc.a, json={"model": NET, "loss": "cross_entropy"})
    assert r.status_code == 422 and "exactly one of input_shape" in r.text
    r = check(svc, loss="mse")                              # 3 outputs, fine for mse on random targets
    assert r.status_code == 200
    r = check(svc, loss="bce_with_logits")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "loss"]
    r = check(svc, model={"layers": [{"type": "linear", "out_features": 3}, {"type": "batchnorm"}]}, batch_size=1)
    assert r.status_code == 422 and "batchnorm" in r.text
    r = check(svc, model={"layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": 3}, {"type": "flatten"},
                                      {"type": "linear", "out_features": 3}]}, input_shape=[5])
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "shape_mismatch"
