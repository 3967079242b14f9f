"""Diagnostics through the API: a job submitted over HTTP, trained by worker.runner.run_job in process
(a real database, artifact store and embedded broker; the processes are test_diagnostics_e2e.py's),
then read back: findings on the job, in their list, in the metrics series and the events stream;
stop_on ends a job failed with the rule's code; the init report is stored on the job."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import iris_like, npz_bytes
from test_events import read_events
from worker import runner

pytestmark = pytest.mark.timeout(120)
CPU = torch.device("cpu")
LR_100 = {"optimizer": {"type": "sgd", "lr": 100.0}, "epochs": 5, "batch_size": 4}


def blobs_npz(n=300, features=8, classes=3, scale=1.0, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, features)) * 2
    y = rng.integers(0, classes, n)
    return npz_bytes(X=((centres[y] + rng.normal(size=(n, features))) * scale).astype(np.float32), y=y)


def mlp(kind: str, hidden: int, width: int = 32, out: int = 3, **linear) -> dict:
    layers = []
    for _ in range(hidden):
        layers += [{"type": "linear", "out_features": width, **linear}, {"type": kind}]
    return {"layers": layers + [{"type": "linear", "out_features": out}]}


def trained(svc, dataset_id: str, **overrides) -> dict:
    """Submit over HTTP, train in process, read the job back over HTTP."""
    r = svc.submit(dataset_id, **overrides)
    assert r.status_code == 202, r.text
    runner.run_job(svc.settings, r.json()["id"], CPU)
    return svc.client.get(f"/v1/jobs/{r.json()['id']}", headers=svc.a).json()


def findings(svc, job_id: str, **params) -> list[dict]:
    r = svc.client.get(f"/v1/jobs/{job_id}/findings", headers=svc.a, params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


@pytest.fixture
def iris(svc):
    return svc.dataset(iris_like(), "iris.csv")


def test_lr_100_sgd_diverges_and_with_stop_on_the_job_fails_with_code_divergence(any_svc):
    svc = any_svc                                        # SQLite, then PostgreSQL
    iris = svc.dataset(iris_like(), "iris.csv")
    job = trained(svc, iris["id"], **LR_100)
    assert job["status"] == "succeeded"                 # it still runs to the end without stop_on
    found = findings(svc, job["id"])
    divergence = next(f for f in found if f["code"] == "divergence")
    assert divergence["severity"] == "error" and divergence["epoch"] == 1 and divergence["value"] > 10
    assert [f["id"] for f in found] == sorted(f["id"] for f in found)
    assert job["findings"]["counts"]["error"] == sum(f["severity"] == "error" for f in found) >= 1
    assert job["findings"]["latest"] == found[-1]

    stopped = trained(svc, iris["id"], **LR_100, diagnostics={"stop_on": ["divergence", "exploding_gradient"]})
    (stop,) = findings(svc, stopped["id"], code="divergence")
    assert stopped["status"] == "failed" and stopped["error"] == {"code": "divergence", "message": stop["message"]}
    assert stopped["progress"]["epoch"] == stop["epoch"] == 1 and stopped["result"] is None


@pytest.mark.parametrize("name, spec, overrides, data, code", [
    ("10-layer sigmoid", mlp("sigmoid", 10), {"optimizer": {"type": "sgd", "lr": 0.1}, "epochs": 3}, {},
     "vanishing_gradient"),
    ("deep relu, torch_default init", mlp("relu", 6, init="torch_default", bias=False), {"epochs": 1}, {},
     "poor_initialization"),
    ("tanh on unscaled inputs", mlp("tanh", 1, 64), {"epochs": 1}, {"scale": 30.0}, "saturated_activation"),
    ("sgd lr 1e-7", mlp("relu", 1), {"optimizer": {"type": "sgd", "lr": 1e-7}, "epochs": 7},
     {}, "loss_not_decreasing"),
    ("relu on inputs scaled by 1e4", mlp("relu", 2), {"optimizer": {"type": "sgd", "lr": 1e-9}, "epochs": 1},
     {"scale": 1e4}, "exploding_gradient"),
    ("wide net on 30 noisy rows", mlp("relu", 2, 256, out=2), {"epochs": 25, "batch_size": 16,
                                                               "validation_split": 0.5}, "noise", "overfitting"),
    ("relu lr 100", mlp("relu", 1, 8), LR_100, "iris", "dead_relu"),
    ("relu lr 100", mlp("relu", 1, 8), LR_100, "iris", "update_ratio"),
])
def test_each_rule_fires_through_the_api_on_a_network_built_to_show_it(svc, name, spec, overrides, data, code):
    if data == "iris":
        dataset = svc.dataset(iris_like(), "iris.csv")
    elif data == "noise":                    # labels that have nothing to do with the inputs
        rng = np.random.default_rng(0)
        dataset = svc.dataset(npz_bytes(X=rng.normal(size=(60, 20)).astype(np.float32), y=rng.integers(0, 2, 60)),
                              "noise.npz")
    else:
        dataset = svc.dataset(blobs_npz(**data), "blobs.npz")
    job = trained(svc, dataset["id"], model=spec, **{"batch_size": 32, **overrides})
    assert job["status"] == "succeeded", job["error"]
    assert code in {f["code"] for f in findings(svc, job["id"])}
    assert findings(svc, job["id"], code=code) and all(f["code"] == code for f in findings(svc, job["id"], code=code))


def test_a_nan_loss_fails_the_job_as_non_finite_with_its_finding(svc):
    dataset = svc.dataset(blobs_npz(scale=1e30), "huge.npz")
    job = trained(svc, dataset["id"], model=mlp("relu", 2), optimizer={"type": "sgd", "lr": 1.0})
    (nan,) = findings(svc, job["id"], code="non_finite")
    assert job["status"] == "failed" and job["error"] == {"code": "non_finite", "message": nan["message"]}


def test_a_healthy_job_on_real_data_has_no_finding_and_an_init_report(svc):
    from sklearn.datasets import load_digits
    digits = load_digits()
    X = (digits.data - digits.data.mean(0)) / (digits.data.std(0) + 1e-6)
    dataset = svc.dataset(npz_bytes(X=X.astype(np.float32), y=digits.target), "digits.npz")
    job = trained(svc, dataset["id"], model=mlp("relu", 2, 64, out=10), optimizer={"type": "adam", "lr": 1e-3},
                  epochs=8, batch_size=32)
    assert job["status"] == "succeeded" and job["latest_metrics"]["val_accuracy"] > 0.9
    assert job["findings"] == {"counts": {"info": 0, "warning": 0, "error": 0}, "latest": None}
    assert findings(svc, job["id"]) == []
    report = job["init_report"]
    assert report["batch_size"] == 32 and report["findings"] == [] and len(report["initial_weights_sha256"]) == 64
    assert 0.5 < report["depth"]["activation_std_ratio"] < 2 and report["layers"]["1"]["type"] == "relu"
    layers = job["latest_metrics"]["layers"]
    assert {"output_mean", "output_std", "dead_fraction"} <= set(layers["1"]) and "grad_norm" in layers["0"]


def test_findings_are_in_the_metrics_series_and_the_events_stream(svc, iris):
    job = trained(svc, iris["id"], **LR_100)
    found = findings(svc, job["id"])
    epochs = svc.client.get(f"/v1/jobs/{job['id']}/metrics", headers=svc.a).json()["epochs"]
    in_series = [f for e in epochs for f in e["findings"]]
    assert [(f["code"], f["epoch"], f["message"]) for f in in_series] == \
        [(f["code"], f["epoch"], f["message"]) for f in found if f["epoch"] > 0]
    events = read_events(svc.client, job["id"], svc.a)
    assert [e["data"] for e in events if e["event"] == "finding"] == found
    after = next(e for e in events if e["event"] == "finding")["id"]       # resume after the first finding
    assert [e["data"] for e in read_events(svc.client, job["id"], svc.a, last_id=after)
            if e["event"] == "finding"] == found[1:]


def test_findings_filters_another_key_and_rule_names(svc, iris):
    job = trained(svc, iris["id"], **LR_100)
    found = findings(svc, job["id"])
    assert findings(svc, job["id"], severity="error") == [f for f in found if f["severity"] == "error"]
    assert findings(svc, job["id"], after_id=found[0]["id"]) == found[1:]
    assert svc.client.get(f"/v1/jobs/{job['id']}/findings", headers=svc.b).status_code == 404
    r = svc.client.get(f"/v1/jobs/{job['id']}/findings", headers=svc.a, params={"code": "dead_neurons"})
    assert r.status_code == 422 and "dead_relu" in r.text
    r = svc.submit(iris["id"], diagnostics={"rules": {"dead_neurons": {"threshold": 0.6}}})
    assert r.status_code == 422
    (problem,) = r.json()["detail"]
    assert problem["loc"] == ["body", "diagnostics", "rules"] and "unknown rule 'dead_neurons'" in problem["msg"]
    assert "valid rules: vanishing_gradient, exploding_gradient, dead_relu" in problem["msg"]
    r = svc.submit(iris["id"], diagnostics={"stop_on": ["explosion"]})
    assert r.status_code == 422 and "unknown rule 'explosion' in stop_on" in r.text
    ok = svc.submit(iris["id"], diagnostics={"rules": {"dead_relu": {"threshold": 0.6}}, "stop_on": ["divergence"]})
    assert ok.status_code == 202 and ok.json()["request"]["diagnostics"]["rules"]["dead_relu"]["threshold"] == 0.6
