"""/v1/jobs/{id}/landscape with the worker's side run in process (worker.landscape.run_landscape on a
real database, artifact store and embedded broker; real worker processes: test_diagnostics_e2e.py)."""
from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import update

from conftest import npz_bytes
from core import artifacts, landscapes
from core.jobspec import build_model
from core.tables import Job, Landscape, utcnow
from engine import Model, losses
from engine.data import split_indices
from worker import runner
from worker.landscape import run_landscape

pytestmark = pytest.mark.timeout(120)
CPU = torch.device("cpu")
SMALL = {"points": 25, "grid": 21, "samples": 4096, "iterations": 60, "trace_samples": 10}


@pytest.fixture
def lab(service_factory):
    return blobs_lab(service_factory(heartbeat_interval_s=0.05, cancel_poll_interval_s=0.05))


def blobs_lab(svc):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 4)) * 2
    y = rng.integers(0, 3, 160)
    X = (centres[y] + rng.normal(size=(160, 4))).astype(np.float32)
    svc.data = svc.dataset(npz_bytes(X=X, y=y), "blobs.npz")
    svc.X, svc.y = torch.tensor(X), torch.tensor(y)
    return svc


def trained_job(svc) -> dict:
    r = svc.submit(svc.data["id"], model={"layers": [{"type": "linear", "out_features": 8}, {"type": "tanh"},
                                                     {"type": "linear", "out_features": 3}]},
                   epochs=5, batch_size=16, validation_split=0.25)
    assert runner.run_job(svc.settings, r.json()["id"], CPU) == "succeeded"
    return svc.client.get(f"/v1/jobs/{r.json()['id']}", headers=svc.a).json()


def post(svc, job_id, headers=None, **options):
    return svc.client.post(f"/v1/jobs/{job_id}/landscape", headers=headers or svc.a, json=options or None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_lab(request, service_factory):
    database = {} if request.param == "sqlite" else {"database_url": request.getfixturevalue("pg_server").create_database()}
    return blobs_lab(service_factory(heartbeat_interval_s=0.05, cancel_poll_interval_s=0.05, **database))


def test_a_landscape_is_queued_then_computed_on_a_worker(any_lab):
    lab = any_lab
    job = trained_job(lab)
    r = post(lab, job["id"], **SMALL)
    assert r.status_code == 202 and r.headers["Location"] == f"/v1/jobs/{job['id']}/landscape"
    assert r.json()["status"] == "queued" and r.json()["result"] is None and r.json()["options"]["grid"] == 21
    threading.Event().wait(0.5)                               # the API computes nothing: it waits for a worker
    assert lab.client.get(f"/v1/jobs/{job['id']}/landscape", headers=lab.a).json()["status"] == "queued"
    assert run_landscape(lab.settings, job["id"], CPU) == "succeeded"
    body = lab.client.get(f"/v1/jobs/{job['id']}/landscape", headers=lab.a).json()
    assert body["status"] == "succeeded" and body["fraction"] == 1.0 and body["error"] is None
    result = body["result"]
    assert result["initial_weights"] == "verified" and result["samples"] == 120      # every training row

    # alpha = 0 and 1 are the losses of the initial and the final weights on those rows
    request = job["request"]
    train_idx, _ = split_indices(160, 0.25, request["seed"])
    X, y = lab.X[train_idx].double(), lab.y[train_idx]

    def loss_of(state) -> float:
        model = Model.from_spec(request["model"], (4,), dtype=torch.float64)
        model.load_state_dict(state)
        return float(losses.make("cross_entropy").forward(model.predict(X), y))
    initial = build_model(request, [4]).state_dict()
    final = load_file(str(artifacts.resolve(lab.settings, artifacts.weights_relpath(job["id"]))))
    line = result["line"]
    assert len(line["alphas"]) == 25 and line["alphas"][0] == -0.5 and line["alphas"][-1] == 1.5
    assert line["losses"][6] == pytest.approx(loss_of(initial), rel=1e-10)
    assert line["losses"][18] == pytest.approx(loss_of(final), rel=1e-10)
    assert loss_of(final) < loss_of(initial)
    surface = result["surface"]
    assert len(surface["xs"]) == 21 and len(surface["losses"]) == 21 and surface["xs"][10] == 0.0
    assert surface["losses"][10][10] == surface["loss_at_center"] == pytest.approx(loss_of(final), rel=1e-10)
    hessian = result["hessian"]
    assert hessian["verdict"] in ("minimum", "saddle", "inconclusive") and hessian["max_eigenvalue"] > 0
    assert hessian["parameters"] == 4 * 8 + 8 + 8 * 3 + 3 and hessian["trace_method"] == "hutchinson"
    largest, smallest, density = hessian["largest"], hessian["smallest"], hessian["density"]
    assert hessian["method"] == "lanczos" and largest["converged"] and largest["bound"] <= 1e-6 * largest["value"]
    assert "eigenvalue is" in hessian["reason"] and 0 < smallest["products"] <= 60 + 20 + 1
    assert len(density["eigenvalues"]) == len(density["density"]) == 201 and 0 <= density["negative_mass"] <= 1
    assert hessian["hessian_vector_products"] == largest["products"] + smallest["products"] + density["products"] + 10


def test_another_key_states_and_limits(lab):
    job = trained_job(lab)
    for call in (lambda h: post(lab, job["id"], h), lambda h: lab.client.get(f"/v1/jobs/{job['id']}/landscape", headers=h),
                 lambda h: lab.client.post(f"/v1/jobs/{job['id']}/landscape/cancel", headers=h)):
        assert call(lab.b).status_code == 404
    assert lab.client.get(f"/v1/jobs/{job['id']}/landscape", headers=lab.a).status_code == 404   # none yet
    queued = lab.submit(lab.data["id"]).json()
    r = post(lab, queued["id"])
    assert r.status_code == 409 and "queued" in r.json()["detail"]
    r = post(lab, job["id"], points=1001)
    assert r.status_code == 422 and "landscape_max_points" in r.json()["detail"][0]["msg"]
    r = post(lab, job["id"], grid=20)
    assert r.status_code == 422                               # at least 21 x 21
    assert post(lab, job["id"]).status_code == 202
    r = post(lab, job["id"])
    assert r.status_code == 409 and "already has a landscape queued" in r.json()["detail"]


def test_cancel_a_queued_and_a_running_landscape(lab):
    job = trained_job(lab)
    post(lab, job["id"])
    r = lab.client.post(f"/v1/jobs/{job['id']}/landscape/cancel", headers=lab.a)
    assert r.json()["status"] == "cancelled" and r.json()["cancel_requested"]
    assert run_landscape(lab.settings, job["id"], CPU) == "skipped"

    post(lab, job["id"], grid=51, iterations=500)             # replaces the finished one
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(run_landscape(lab.settings, job["id"], CPU)))
    worker.start()
    while lab.client.get(f"/v1/jobs/{job['id']}/landscape", headers=lab.a).json()["status"] != "running":
        threading.Event().wait(0.01)
    lab.client.post(f"/v1/jobs/{job['id']}/landscape/cancel", headers=lab.a)
    worker.join(60)
    body = lab.client.get(f"/v1/jobs/{job['id']}/landscape", headers=lab.a).json()
    assert outcome == ["cancelled"] and body["status"] == "cancelled" and body["result"] is None
    assert body["attempts"] == 1


def test_a_lost_worker_fails_it_and_an_unsent_one_is_sent_again(lab):
    job = trained_job(lab)
    post(lab, job["id"])
    assert landscapes.claim(lab.settings, job["id"]) == 1
    with lab.session() as s:
        s.execute(update(Landscape).values(heartbeat_at=utcnow() - timedelta(seconds=60)))
        s.commit()
    assert landscapes.reconcile(lab.settings) == [job["id"]]
    body = lab.client.get(f"/v1/jobs/{job['id']}/landscape", headers=lab.a).json()
    assert body["status"] == "failed" and body["error"]["code"] == "worker_lost"
    assert landscapes.finish(lab.settings, job["id"], 1, "succeeded") is False      # the lost one cannot write

    post(lab, job["id"])
    with lab.session() as s:
        s.execute(update(Landscape).values(sent_at=None, created_at=utcnow() - timedelta(seconds=10)))
        s.commit()
    assert landscapes.reconcile(lab.settings) == [job["id"]]
    with lab.session() as s:
        assert s.get(Landscape, job["id"]).sent_at is not None


def test_a_key_has_a_bounded_number_of_landscapes_and_deleting_the_job_deletes_it(service_factory):
    svc = service_factory(max_active_landscapes_per_key=1)
    rng = np.random.default_rng(0)
    svc.data = svc.dataset(npz_bytes(X=rng.normal(size=(40, 4)).astype(np.float32), y=rng.integers(0, 3, 40)),
                           "b.npz")
    first, second = trained_job(svc), trained_job(svc)
    assert post(svc, first["id"]).status_code == 202
    r = post(svc, second["id"])
    assert r.status_code == 429 and "max_active_landscapes_per_key" in r.json()["detail"]
    svc.client.post(f"/v1/jobs/{first['id']}/landscape/cancel", headers=svc.a)
    assert svc.client.delete(f"/v1/jobs/{first['id']}", headers=svc.a).status_code == 204
    with svc.session() as s:
        assert s.get(Landscape, first["id"]) is None and s.get(Job, first["id"]) is None
