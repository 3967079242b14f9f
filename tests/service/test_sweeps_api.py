"""POST /v1/sweeps through the in-process API (no worker: trials stay queued unless a test moves
them with core.lifecycle's own transitions, as a worker would): admission and its 4xx, the first
trials, the key's limits, cancel, delete, and the sweep row's lock under racing controllers."""
from __future__ import annotations

import pytest

from core import lifecycle
from core.lifecycle import JobStatus
from core.sweeps import scheduler
from core.tables import Job

from conftest import at_once, iris_like, make_service

LAYERS = [{"type": "linear", "out_features": 8}, {"type": "relu"}, {"type": "linear", "out_features": 3}]


def body(dataset_id: str, **overrides) -> dict:
    sweep = {"name": "lr", "dataset_id": dataset_id, "method": "grid", "max_concurrent": 2,
             "job": {"model": {"layers": LAYERS}, "loss": "cross_entropy", "epochs": 2, "batch_size": 4,
                     "device": "cpu"},
             "parameters": {"optimizer.lr": {"choice": [0.001, 0.01, 0.1]},
                            "model.layers.0.out_features": {"choice": [4, 8]}}}
    sweep.update(overrides)
    return sweep


def trial_jobs(svc, sweep_id: str, status: str | None = None) -> list[dict]:
    query = f"/v1/jobs?sweep={sweep_id}&limit=100&fields=request" + (f"&status={status}" if status else "")
    return svc.client.get(query, headers=svc.a).json()["items"]


def test_submit_makes_the_first_trials_as_queued_jobs_of_the_same_key(svc, iris):
    r = svc.client.post("/v1/sweeps", headers=svc.a, json=body(iris["id"]))
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert r.headers["Location"] == f"/v1/sweeps/{sweep['id']}"
    assert sweep["status"] == "running" and sweep["max_trials"] == 6 and sweep["goal"] == "minimize"
    assert sweep["counts"] | {} == {"made": 2, "remaining": 4, "queued": 2, "running": 0, "succeeded": 0,
                                    "pruned": 0, "failed": 0, "cancelled": 0, "deleted": 0}
    jobs = trial_jobs(svc, sweep["id"])
    assert len(jobs) == 2 and {j["sweep_id"] for j in jobs} == {sweep["id"]}
    by_id = {t["job_id"]: t for t in sweep["trials"]}
    for job in jobs:      # each trial's job is the template with the trial's values written in
        params = by_id[job["id"]]["params"]
        assert job["request"]["optimizer"]["lr"] == params["optimizer.lr"]
        assert job["request"]["model"]["layers"][0]["out_features"] == params["model.layers.0.out_features"]
        assert job["request"]["dataset_id"] == iris["id"] and job["status"] == "queued"
    assert svc.client.get(f"/v1/jobs?sweep={sweep['id']}", headers=svc.b).json()["total"] == 0
    assert svc.client.get(f"/v1/sweeps/{sweep['id']}", headers=svc.b).status_code == 404
    listed = svc.client.get("/v1/sweeps", headers=svc.a).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == sweep["id"] and "trials" not in listed["items"][0]


@pytest.mark.parametrize("overrides, status, loc, says", [
    ({"parameters": {"model.layers.7.out_features": {"choice": [4]}}}, 422,
     ["body", "parameters", "model.layers.7.out_features"], "there is no index 7"),
    ({"parameters": {"optimizer.lrr": {"choice": [0.1]}}}, 422, ["body", "parameters", "optimizer.lrr"],
     "Extra inputs are not permitted"),
    ({"parameters": {"optimizer.lr": {"choice": []}}}, 422, ["body", "parameters", "optimizer.lr"],
     "choice is empty"),
    ({"parameters": {"optimizer.lr": {"log_uniform": [0.1, 0.01]}}, "method": "random", "max_trials": 4}, 422,
     ["body", "parameters", "optimizer.lr"], "low 0.1 must be below high 0.01"),
    ({"parameters": {"optimizer.lr": {"uniform": [0.1, 0.1]}}, "method": "tpe", "max_trials": 4}, 422,
     ["body", "parameters", "optimizer.lr"], "low 0.1 must be below high 0.1"),
    ({"parameters": {"optimizer.lr": {"uniform": ["0.01", 0.1]}}, "method": "tpe", "max_trials": 4}, 422,
     ["body", "parameters", "optimizer.lr", "uniform", 0], "Input should be a valid number"),
    ({"parameters": {"model.layers.0.out_features": {"choice": [4, 0]}}}, 422,
     ["body", "parameters", "model.layers.0.out_features"], "model.layers.0.out_features = 0"),
    ({"parameters": {"model.layers.2.out_features": {"choice": [3, 5]}}}, 422,        # 5 outputs for 3 classes
     ["body", "parameters", "model.layers.2.out_features"], "model.layers.2.out_features = 5"),
    ({"parameters": {"optimizer.lr": {"uniform": [0.01, 0.1]}}}, 422, ["body", "parameters", "optimizer.lr"],
     "a grid needs a finite set of values"),
    ({"parameters": {"optimizer.lr": {"choice": list(range(1, 31))},
                     "optimizer.eps": {"choice": [1e-8 * k for k in range(1, 31)]}}}, 422,
     ["body", "parameters"], "the grid has 30 × 30 = 900 points; the limit is 500"),
    ({"method": "random"}, 422, ["body", "max_trials"], "needs max_trials"),
    ({"metric": "val_r2"}, 422, ["body", "metric"], "not reported for a classification dataset"),
    ({"metric": "val_f1"}, 422, ["body", "metric"], "'val_f1' is not a per-epoch metric"),
    ({"max_concurrent": 9}, 422, ["body", "max_concurrent"], "exceeds the 4 jobs a key may have"),
    ({"early_stopping": {"type": "asha", "min_resource": 3}}, 422, ["body", "early_stopping", "min_resource"],
     "more than the job's 2 epochs"),
])
def test_bad_sweeps_are_4xx_naming_what_is_wrong(svc, iris, overrides, status, loc, says):
    r = svc.client.post("/v1/sweeps", headers=svc.a, json=body(iris["id"], **overrides))
    assert r.status_code == status, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == loc and says in detail["msg"], detail
    assert svc.client.get("/v1/sweeps", headers=svc.a).json()["total"] == 0   # nothing stored
    with svc.session() as s:
        assert s.query(Job).count() == 0


def test_another_keys_dataset_is_a_404_naming_it(svc, iris):
    r = svc.client.post("/v1/sweeps", headers=svc.b, json=body(iris["id"]))
    assert r.status_code == 404 and r.json()["detail"] == f"dataset_id: dataset {iris['id']!r} not found"


def test_values_that_only_clash_together_are_found_in_the_grid(service_factory):
    """Either wide layer alone fits the parameter limit; both together do not."""
    svc = service_factory(max_parameters=100_000)
    ds = svc.dataset(iris_like(), "iris.csv")
    layers = [{"type": "linear", "out_features": 4}, {"type": "relu"}, {"type": "linear", "out_features": 4},
              {"type": "relu"}, {"type": "linear", "out_features": 3}]
    r = svc.client.post("/v1/sweeps", headers=svc.a, json=body(ds["id"], job={
        "model": {"layers": layers}, "loss": "cross_entropy", "epochs": 2}, parameters={
        "model.layers.0.out_features": {"choice": [4, 500]}, "model.layers.2.out_features": {"choice": [4, 500]}}))
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "parameters"], detail
    assert ("the point model.layers.0.out_features = 500, model.layers.2.out_features = 500 makes an invalid "
            "job: the model has 254,503 trainable parameters") in detail["msg"]
    assert "the limit is 100,000" in detail["msg"]


def test_trials_respect_the_keys_concurrency_limit_and_resume_when_it_frees(service_factory):
    svc = service_factory(max_concurrent_jobs=2)
    ds = svc.dataset(iris_like(), "iris.csv")
    other = svc.submit(ds["id"]).json()          # a job of the same key takes one of its two slots
    sweep = svc.client.post("/v1/sweeps", headers=svc.a, json=body(ds["id"])).json()
    assert sweep["counts"]["made"] == 1           # one slot left for the sweep's max_concurrent of 2
    svc.client.post(f"/v1/jobs/{other['id']}/cancel", headers=svc.a)
    scheduler.advance_all(svc.settings)           # what the reconciler's pass does
    assert len(trial_jobs(svc, sweep["id"], "queued")) == 2


def test_running_sweeps_per_key_are_limited(service_factory):
    svc = service_factory(max_active_sweeps=1)
    ds = svc.dataset(iris_like(), "iris.csv")
    assert svc.client.post("/v1/sweeps", headers=svc.a, json=body(ds["id"])).status_code == 202
    r = svc.client.post("/v1/sweeps", headers=svc.a, json=body(ds["id"]))
    assert r.status_code == 429 and "1 sweeps running; the limit is 1" in r.json()["detail"]


def test_cancel_stops_queued_trials_and_makes_no_more_then_delete_removes_the_jobs(svc, iris):
    sweep = svc.client.post("/v1/sweeps", headers=svc.a, json=body(iris["id"])).json()
    r = svc.client.delete(f"/v1/sweeps/{sweep['id']}", headers=svc.a)
    assert r.status_code == 409 and "cancel it" in r.json()["detail"]
    for job in trial_jobs(svc, sweep["id"]):      # between two trials the dataset is still the sweep's
        svc.client.post(f"/v1/jobs/{job['id']}/cancel", headers=svc.a)
    r = svc.client.delete(f"/v1/datasets/{iris['id']}", headers=svc.a)
    assert r.status_code == 409 and "1 running sweep(s)" in r.json()["detail"]
    cancelled = svc.client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=svc.a).json()
    assert cancelled["status"] == "cancelled" and cancelled["counts"]["cancelled"] == 2
    assert cancelled["counts"]["remaining"] == 0 and cancelled["counts"]["made"] == 2
    scheduler.advance_all(svc.settings)
    assert svc.client.get(f"/v1/sweeps/{sweep['id']}", headers=svc.a).json()["counts"]["made"] == 2
    assert svc.client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=svc.a).status_code == 200  # idempotent
    assert svc.client.delete(f"/v1/sweeps/{sweep['id']}", headers=svc.a).status_code == 204
    assert svc.client.get(f"/v1/sweeps/{sweep['id']}", headers=svc.a).status_code == 404
    with svc.session() as s:
        assert s.query(Job).count() == 0


def test_a_trial_whose_point_no_longer_admits_fails_and_the_sweep_goes_on(service_factory):
    """The operator lowered a limit after the sweep was admitted: the trial it makes now fails
    with the reason, is counted, and the sweep moves on to the next."""
    svc = service_factory()
    ds = svc.dataset(iris_like(), "iris.csv")
    sweep = svc.client.post("/v1/sweeps", headers=svc.a, json=body(ds["id"], max_concurrent=1)).json()
    first = trial_jobs(svc, sweep["id"])[0]
    _run_as_worker(svc.settings, first["id"], JobStatus.SUCCEEDED)
    tight = svc.settings.model_copy(update={"max_parameters": 10})
    scheduler.fill(tight, sweep["id"])
    failed = trial_jobs(svc, sweep["id"], "failed")
    assert len(failed) >= 1 and failed[0]["error"]["code"] == "invalid_trial"
    assert "the limit is 10" in failed[0]["error"]["message"]


def _run_as_worker(settings, job_id: str, status: JobStatus) -> None:
    claimed = lifecycle.claim(settings, job_id, lambda requested: "cpu")
    assert claimed is not None
    assert lifecycle.finish(settings, claimed, status)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_racing_controllers_never_exceed_max_concurrent(request, tmp_path, service_factory, backend):
    if backend == "postgres":
        svc = make_service(tmp_path, database_url=request.getfixturevalue("pg_server").create_database())
    else:
        svc = service_factory()
    ds = svc.dataset(iris_like(), "iris.csv")
    sweep = svc.client.post("/v1/sweeps", headers=svc.a, json=body(ds["id"], max_concurrent=3, parameters={
        "optimizer.lr": {"choice": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]},
        "model.layers.0.out_features": {"choice": [4, 8]}})).json()
    while True:
        at_once(lambda: scheduler.fill(svc.settings, sweep["id"]), 8)   # 8 controllers at one instant
        active = trial_jobs(svc, sweep["id"], "queued")
        current = svc.client.get(f"/v1/sweeps/{sweep['id']}", headers=svc.a).json()
        assert len(active) == min(3, 12 - current["counts"]["succeeded"]), current["counts"]
        if not active:
            break
        for job in active[:2]:           # two trials end; the race refills exactly two slots
            _run_as_worker(svc.settings, job["id"], JobStatus.SUCCEEDED)
    assert current["status"] == "succeeded" and current["counts"]["made"] == 12
    assert [t["number"] for t in current["trials"]] == list(range(12))
    points = {tuple(sorted(t["params"].items())) for t in current["trials"]}
    assert len(points) == 12                      # each grid point once: no trial made twice
    if backend == "postgres":
        svc.client.close()
