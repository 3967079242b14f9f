"""POST /v1/jobs: what is refused before anything is queued, and what a queued job looks like."""
from __future__ import annotations

import time

import numpy as np
import pytest

from api.schemas import JobPublic
from core.tables import Job

from conftest import csv_bytes, npz_bytes


def msg(r) -> str:
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else " | ".join(e["msg"] for e in detail)


def layers(*specs):
    return {"layers": list(specs)}


def test_job_is_committed_queued_and_sent_to_the_broker(svc, iris):
    r = svc.submit(iris["id"], device="cuda")
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["device"] == "cuda" and job["queue"] == "gpu"
    assert job["n_parameters"] == 4 * 8 + 8 + 8 * 3 + 3
    assert job["progress"] == {"epoch": 0, "epochs": 2, "step": 0, "total_steps": None, "fraction": 0.0}
    assert job["request"]["loss"] == {"type": "cross_entropy", "label_smoothing": 0.0,
                                      "ignore_index": -100}  # defaults filled
    assert job["request"]["optimizer"]["betas"] == [0.9, 0.999] and job["error"] is None
    with svc.session() as s:
        row = s.get(Job, job["id"])
        assert row.sent_at is not None and row.max_attempts == svc.settings.max_attempts
    messages = list((svc.settings.broker_dir / "queue").glob("*.msg"))
    assert len(messages) == 1 and job["id"] in messages[0].read_text() and ".gpu." in messages[0].name
    polled = svc.client.get(r.headers["location"], headers=svc.a)   # the hand-serialized fast path
    assert polled.headers["content-type"] == "application/json"
    assert polled.json() == job == svc.client.get(
        "/v1/jobs?fields=request&fields=init_report", headers=svc.a).json()["items"][0]
    assert JobPublic.model_validate(polled.json()).created_at.tzinfo is not None


def test_broker_down_still_answers_202_and_leaves_the_job_for_the_reconciler(service_factory):
    svc = service_factory(broker_url="redis://127.0.0.1:1/0")
    ds = svc.dataset(csv_bytes(["a", "b", "c", "d", "t"], [[1, 2, 3, 4, i % 3] for i in range(12)]))
    r = svc.submit(ds["id"])
    assert r.status_code == 202 and r.json()["status"] == "queued"
    start = time.monotonic()
    again = svc.submit(ds["id"])   # the broker is marked down for a while: no second wait on it
    assert again.status_code == 202 and time.monotonic() - start < 1.0
    with svc.session() as s:
        assert s.get(Job, r.json()["id"]).sent_at is None and s.get(Job, again.json()["id"]).sent_at is None


def test_unknown_layer_type_lists_the_valid_ones(svc, iris):
    r = svc.submit(iris["id"], model=layers({"type": "dense", "out_features": 3}))
    assert r.status_code == 422
    err = r.json()["detail"][0]
    assert err["loc"][:4] == ["body", "model", "layers", 0]
    assert "'dense'" in err["msg"] and "'linear'" in err["msg"] and "'conv2d'" in err["msg"]


def test_shape_mismatch_names_the_layer_and_both_shapes(svc):
    X = np.zeros((8, 1, 6, 6), dtype=np.float32)
    ds = svc.dataset(npz_bytes(X=X, y=np.arange(8) % 2), "img.npz")
    r = svc.submit(ds["id"], model=layers({"type": "conv2d", "out_channels": 4, "kernel_size": 3},
                                          {"type": "self_attention", "num_heads": 2}))
    assert r.status_code == 422
    err = r.json()["detail"][0]
    assert err["loc"] == ["body", "model", "layers", 1] and err["type"] == "shape_mismatch"
    assert "layers[1] (self_attention)" in err["msg"] and "(N, 4, 4, 4)" in err["msg"]
    # a linear acts on the last dim, as torch.nn.Linear: without a flatten the output does not fit the loss
    r = svc.submit(ds["id"], model=layers({"type": "conv2d", "out_channels": 4, "kernel_size": 3},
                                          {"type": "linear", "out_features": 2}))
    assert r.status_code == 422 and "add a flatten and a linear layer at the end" in r.text
    r = svc.submit(ds["id"], model=layers({"type": "conv2d", "out_channels": 4, "kernel_size": 9},
                                          {"type": "flatten"}, {"type": "linear", "out_features": 2}))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "model", "layers", 0]
    assert "(N, 1, 6, 6)" in msg(r)


@pytest.mark.parametrize("out, loss, words", [
    (4, "cross_entropy", "the model outputs 4 values per sample, the data has 3 classes"),
    (3, "mse", "mse is a regression loss"),
    (1, "bce_with_logits", "bce_with_logits is for 2 classes"),
])
def test_loss_and_outputs_must_fit_the_classes(svc, iris, out, loss, words):
    r = svc.submit(iris["id"], model=layers({"type": "linear", "out_features": out}), loss=loss)
    assert r.status_code == 422 and words in msg(r) and r.json()["detail"][0]["loc"] == ["body", "loss"]


def test_binary_and_regression_compatibility(svc):
    binary = svc.dataset(csv_bytes(["a", "t"], [[i, "yes" if i % 2 else "no"] for i in range(8)]))
    ok = svc.submit(binary["id"], model=layers({"type": "linear", "out_features": 1}), loss="bce_with_logits")
    assert ok.status_code == 202, ok.text
    r = svc.submit(binary["id"], model=layers({"type": "linear", "out_features": 2}), loss="bce_with_logits")
    assert r.status_code == 422 and "needs 1 output per sample" in msg(r)
    reg = svc.dataset(csv_bytes(["a", "t"], [[i, i * 0.37] for i in range(8)]))
    r = svc.submit(reg["id"], model=layers({"type": "linear", "out_features": 3}), loss="mse")
    assert r.status_code == 422 and "the data has 1 target per sample" in msg(r)
    r = svc.submit(reg["id"], model=layers({"type": "linear", "out_features": 1}), loss="cross_entropy")
    assert r.status_code == 422 and "cross_entropy is a classification loss" in msg(r)
    assert svc.submit(reg["id"], model=layers({"type": "linear", "out_features": 1}),
                      loss={"type": "huber", "delta": 0.5}).status_code == 202


def test_final_softmax_before_cross_entropy_is_refused(svc, iris):
    r = svc.submit(iris["id"], model=layers({"type": "linear", "out_features": 3}, {"type": "softmax"}))
    assert r.status_code == 422 and "remove the final softmax" in msg(r)


@pytest.mark.parametrize("override, loc", [
    ({"optimizer": {"type": "adam", "lr": -0.1}}, ["body", "optimizer", "adam", "lr"]),
    ({"optimizer": {"type": "sgd", "lr": 1e9}}, ["body", "optimizer", "sgd", "lr"]),
    ({"epochs": 0}, ["body", "epochs"]),
    ({"epochs": 10**9}, ["body", "epochs"]),
    ({"batch_size": -5}, ["body", "batch_size"]),
    ({"validation_split": 1.5}, ["body", "validation_split"]),
    ({"device": "tpu"}, ["body", "device"]),
    ({"loss": "crossentropy"}, ["body", "loss"]),
    ({"optimizer": {"type": "adam", "betas": [0.9, 1.5]}}, ["body", "optimizer", "adam", "betas", 1]),
    ({"surprise": 1}, ["body", "surprise"]),
])
def test_absurd_hyperparameters_are_422_at_the_field(svc, iris, override, loc):
    r = svc.submit(iris["id"], **override)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc, r.json()


def test_bad_json_and_wrong_types(svc):
    r = svc.client.post("/v1/jobs", headers={**svc.a, "Content-Type": "application/json"}, content=b'{"dataset_id": ')
    assert r.status_code == 422 and "invalid JSON" in msg(r)
    for body in (b"[]", b"null", b'"x"', b"{}"):
        r = svc.client.post("/v1/jobs", headers={**svc.a, "Content-Type": "application/json"}, content=body)
        assert r.status_code == 422, body


def test_missing_dataset_is_404_naming_it_and_a_malformed_id_is_422(svc):
    missing = "0b5e6a4e-32c4-4b1f-9d0a-6f3c2f1e9a77"
    r = svc.submit(missing)
    assert r.status_code == 404 and repr(missing) in msg(r)
    r = svc.submit("no-such-dataset")
    assert r.status_code == 422 and "ids are UUIDs" in msg(r)


def test_parameter_limit_names_both_numbers(service_factory):
    svc = service_factory(max_parameters=1000)
    ds = svc.dataset(csv_bytes(["a", "b", "c", "d", "t"], [[1, 2, 3, 4, i % 3] for i in range(12)]))
    r = svc.submit(ds["id"], model=layers({"type": "linear", "out_features": 300}, {"type": "relu"},
                                          {"type": "linear", "out_features": 3}))
    assert r.status_code == 422 and "2,403 trainable parameters" in msg(r) and "1,000" in msg(r)


def test_compute_limit(service_factory):
    svc = service_factory(max_compute_per_job=100)
    ds = svc.dataset(csv_bytes(["a", "b", "c", "d", "t"], [[1, 2, 3, 4, i % 3] for i in range(12)]))
    r = svc.submit(ds["id"], epochs=20, validation_split=0.25)   # 20 × 9 training rows
    assert r.status_code == 422 and "20 × 9 = 180" in msg(r) and "at most 11" in msg(r)
    assert svc.submit(ds["id"], epochs=11, validation_split=0.25).status_code == 202


def test_concurrent_jobs_limit_is_429_and_frees_up_on_cancel(service_factory):
    svc = service_factory(max_concurrent_jobs=2)
    ds = svc.dataset(csv_bytes(["a", "b", "c", "d", "t"], [[1, 2, 3, 4, i % 3] for i in range(12)]))
    first = svc.submit(ds["id"]).json()
    assert svc.submit(ds["id"]).status_code == 202
    r = svc.submit(ds["id"])
    assert r.status_code == 429 and "the limit is 2" in msg(r)
    svc.client.post(f"/v1/jobs/{first['id']}/cancel", headers=svc.a)
    assert svc.submit(ds["id"]).status_code == 202
