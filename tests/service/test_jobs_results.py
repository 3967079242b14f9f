"""Polling, metrics, cancel, weights and predict: the worker's side is played by writing what it writes."""
from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch

from core.tables import Job, JobMetric

from conftest import csv_bytes, finish, npz_bytes


def msg(r) -> str:
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else " | ".join(e["msg"] for e in detail)


def test_weights_and_predict_are_409_until_succeeded(svc, iris):
    job = svc.submit(iris["id"]).json()
    r = svc.client.get(f"/v1/jobs/{job['id']}/weights", headers=svc.a)
    assert r.status_code == 409 and "is queued" in msg(r)
    r = svc.client.post(f"/v1/jobs/{job['id']}/predict", headers=svc.a, json={"inputs": [[1, 2, 3, 4]]})
    assert r.status_code == 409 and "is queued" in msg(r)
    with svc.session() as s:
        s.get(Job, job["id"]).status = "failed"
        s.commit()
    assert "is failed" in msg(svc.client.get(f"/v1/jobs/{job['id']}/weights", headers=svc.a))


def test_weights_load_into_torch_nn_and_predict_matches_it(svc, iris):
    job = svc.submit(iris["id"]).json()
    finish(svc, job, iris["input_shape"])
    r = svc.client.get(f"/v1/jobs/{job['id']}/weights", headers=svc.a)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert f'filename="{job["id"]}.safetensors"' in r.headers["content-disposition"]
    reference = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    reference.load_state_dict(safetensors.torch.load(r.content), strict=True)

    rows = np.random.default_rng(1).normal(size=(5, 4)).round(3).tolist()
    r = svc.client.post(f"/v1/jobs/{job['id']}/predict", headers=svc.a, json={"inputs": rows})
    assert r.status_code == 200, r.text
    out = r.json()
    with torch.no_grad():
        logits = reference(torch.tensor(rows, dtype=torch.float32))
    np.testing.assert_allclose(out["outputs"], logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["probabilities"], torch.softmax(logits, 1).numpy(), rtol=1e-5, atol=1e-6)
    assert np.allclose(np.sum(out["probabilities"], axis=1), 1)
    assert out["classes"] == [iris["classes"][i] for i in logits.argmax(1).tolist()]
    assert job["id"] in svc.client.app.state.model_cache       # loaded once, then served from memory


def test_predict_bce_gives_two_class_probabilities(svc):
    ds = svc.dataset(csv_bytes(["a", "b", "t"], [[i, -i, "yes" if i % 2 else "no"] for i in range(8)]))
    job = svc.submit(ds["id"], model={"layers": [{"type": "linear", "out_features": 1}]},
                     loss="bce_with_logits").json()
    model = finish(svc, job, ds["input_shape"])
    r = svc.client.post(f"/v1/jobs/{job['id']}/predict", headers=svc.a, json={"inputs": [[1, 2], [-3, 0.5]]})
    out = r.json()
    z = model.predict(torch.tensor([[1, 2], [-3, 0.5]])).reshape(-1)
    p = torch.sigmoid(z)
    np.testing.assert_allclose(np.array(out["probabilities"]), torch.stack([1 - p, p], 1).numpy(), rtol=1e-5)
    assert out["classes"] == [ds["classes"][int(v > 0.5)] for v in p.tolist()]


def test_predict_regression_on_images_returns_outputs_only(svc):
    X = np.random.default_rng(0).normal(size=(6, 1, 4, 4))
    ds = svc.dataset(npz_bytes(X=X, y=np.linspace(0, 1, 12).reshape(6, 2)), "img.npz")
    job = svc.submit(ds["id"], loss="mse", model={"layers": [
        {"type": "conv2d", "out_channels": 2, "kernel_size": 3}, {"type": "flatten"},
        {"type": "linear", "out_features": 2}]}).json()
    model = finish(svc, job, ds["input_shape"])
    r = svc.client.post(f"/v1/jobs/{job['id']}/predict", headers=svc.a, json={"inputs": X[:3].tolist()})
    assert r.status_code == 200 and set(r.json()) == {"outputs"}
    np.testing.assert_allclose(r.json()["outputs"], model.predict(torch.tensor(X[:3])).numpy(), rtol=1e-5)


def test_predict_after_the_dataset_is_deleted_uses_what_the_job_recorded(svc, iris):
    job = svc.submit(iris["id"]).json()
    model = finish(svc, job, iris["input_shape"])          # weights without any metadata
    assert svc.client.delete(f"/v1/datasets/{iris['id']}", headers=svc.a).status_code == 204
    rows = [[0.5, -1.0, 2.0, 0.1]]
    r = svc.client.post(f"/v1/jobs/{job['id']}/predict", headers=svc.a, json={"inputs": rows})
    assert r.status_code == 200, r.text
    logits = model.predict(torch.tensor(rows))
    assert r.json()["classes"] == [iris["classes"][int(logits.argmax(1))]]


def test_predict_on_a_job_without_a_recorded_input_shape_is_409(svc, iris):
    """A job submitted before jobs recorded their input shape, whose dataset is gone."""
    job = svc.submit(iris["id"]).json()
    finish(svc, job, iris["input_shape"])
    with svc.session() as s:
        s.get(Job, job["id"]).input_shape = None
        s.commit()
    r = svc.client.post(f"/v1/jobs/{job['id']}/predict", headers=svc.a, json={"inputs": [[1, 2, 3, 4]]})
    assert r.status_code == 409 and "input shape" in msg(r)


@pytest.mark.parametrize("inputs, words", [
    ([], "at least 1 item"),
    ([[1, 2, 3, 4], [1, 2, 3]], "inputs[1] has 3 values; the model takes the dataset's 4 feature columns"),
    ([[1, 2, 3, 4], [1, 2, 3, "x"]], "inputs[1] holds non-numbers"),
    ([[1, 2, 3, 4], [[1, 2], 3, 4, 5]], "inputs[1] is ragged"),
    ([1, 2, 3, 4], "inputs[0] has shape ()"),
    ([[1, 2, 3, 4], [None, 2, 3, 4]], "inputs[1] holds non-numbers"),
    ("not a list", "valid list"),
])
def test_predict_inputs_must_match_the_input_shape(svc, iris, inputs, words):
    job = svc.submit(iris["id"]).json()
    finish(svc, job, iris["input_shape"])
    r = svc.client.post(f"/v1/jobs/{job['id']}/predict", headers=svc.a, json={"inputs": inputs})
    assert r.status_code == 422 and words in msg(r), msg(r)


def test_predict_refuses_nan_and_too_many_rows(service_factory):
    svc = service_factory(max_predict_rows=3)
    ds = svc.dataset(csv_bytes(["a", "b", "c", "d", "t"], [[1, 2, 3, 4, i % 3] for i in range(12)]))
    job = svc.submit(ds["id"]).json()
    finish(svc, job, ds["input_shape"])
    url = f"/v1/jobs/{job['id']}/predict"
    for bad in (b"NaN", b"1e999"):     # not JSON numbers (RFC 8259), or not a float64
        r = svc.client.post(url, headers={**svc.a, "Content-Type": "application/json"},
                            content=b'{"inputs": [[1, 2, 3, 4], [1, %s, 3, 4]]}' % bad)
        assert r.status_code == 422 and "invalid JSON at character 30" in msg(r)
    r = svc.client.post(url, headers=svc.a, json={"inputs": [[1, 2, 3, 4]] * 4})
    assert r.status_code == 422 and "at most 3" in msg(r)


def test_metrics_are_ordered_by_epoch(svc, iris):
    job = svc.submit(iris["id"]).json()
    with svc.session() as s:
        for epoch in (2, 1):
            s.add(JobMetric(job_id=job["id"], epoch=epoch, train_loss=1.0 / epoch, val_loss=2.0 / epoch,
                            metrics={"val_accuracy": 0.5 * epoch, "grad_norm": {"0.weight": 0.1}}))
        row = s.get(Job, job["id"])
        row.status, row.epoch, row.step, row.total_steps, row.fraction = "running", 1, 3, 6, 0.5
        row.latest_metrics = {"train_loss": 0.5}
        s.commit()
    r = svc.client.get(f"/v1/jobs/{job['id']}/metrics", headers=svc.a).json()
    assert r["job_id"] == job["id"] and [e["epoch"] for e in r["epochs"]] == [1, 2]
    assert r["epochs"][1] == {"epoch": 2, "train_loss": 0.5, "val_loss": 1.0, "val_accuracy": 1.0,
                              "grad_norm": {"0.weight": 0.1}}
    polled = svc.client.get(f"/v1/jobs/{job['id']}", headers=svc.a).json()
    assert polled["progress"] == {"epoch": 1, "epochs": 2, "step": 3, "total_steps": 6, "fraction": 0.5}
    assert polled["latest_metrics"] == {"train_loss": 0.5} and polled["status"] == "running"


def test_cancel_queued_running_and_finished(svc, iris):
    queued, running, done = (svc.submit(iris["id"]).json() for _ in range(3))
    with svc.session() as s:
        s.get(Job, running["id"]).status = "running"
        row = s.get(Job, done["id"])
        row.status, row.error_code, row.error_message = "failed", "diverged", "loss became NaN at epoch 3"
        s.commit()
    r = svc.client.post(f"/v1/jobs/{queued['id']}/cancel", headers=svc.a).json()
    assert r["status"] == "cancelled" and r["finished_at"] is not None
    again = svc.client.post(f"/v1/jobs/{queued['id']}/cancel", headers=svc.a)
    assert again.status_code == 200 and again.json() == r                       # idempotent
    r = svc.client.post(f"/v1/jobs/{running['id']}/cancel", headers=svc.a).json()
    assert r["status"] == "running" and r["cancel_requested"] is True           # the worker stops it
    r = svc.client.post(f"/v1/jobs/{done['id']}/cancel", headers=svc.a).json()
    assert r["status"] == "failed" and r["cancel_requested"] is False
    assert r["error"] == {"code": "diverged", "message": "loss became NaN at epoch 3"}


def test_job_list_filters_by_status_and_validates_it(svc, iris):
    a, b = svc.submit(iris["id"]).json(), svc.submit(iris["id"]).json()
    svc.client.post(f"/v1/jobs/{a['id']}/cancel", headers=svc.a)
    page = svc.client.get("/v1/jobs?status=queued", headers=svc.a).json()
    assert page["total"] == 1 and [j["id"] for j in page["items"]] == [b["id"]]
    assert [j["id"] for j in svc.client.get("/v1/jobs", headers=svc.a).json()["items"]] == [b["id"], a["id"]]
    r = svc.client.get("/v1/jobs?status=done", headers=svc.a)
    assert r.status_code == 422 and "'queued'" in msg(r)
    assert svc.client.get("/v1/jobs?limit=1000", headers=svc.a).status_code == 422
    assert svc.client.get("/v1/jobs?limit=100", headers=svc.a).status_code == 200
