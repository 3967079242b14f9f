"""A job on two processes (issue 19) through the API: admission (422s), the rank slots reserved all or
nothing, rank processes spawned by the worker that claimed it (runner.run_job, as the Celery task runs
it), weights equal to a one-process run on the same global batch to float32 rounding, the global curves
with each rank's step time; a rank SIGKILLed mid-run stops the others within seconds and the job resumes
from its checkpoint with the same world size; cancel stops every rank."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from core import artifacts, rank_slots
from core.lifecycle import JobStatus
from core.tables import Job
from worker import runner
from worker.ranks import run_dir

from conftest import iris_like

CPU = torch.device("cpu")
TWO = {"distributed": {"processes": 2}}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:       # a zombie (exited, not yet reaped by its parent) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def in_background(svc, job_id: str) -> tuple[threading.Thread, list]:
    ended: list = []
    thread = threading.Thread(target=lambda: ended.append(runner.run_job(svc.settings, job_id, CPU)), daemon=True)
    thread.start()
    return thread, ended


def cancel_after_an_epoch(svc, job_id: str, thread, ended: list) -> None:
    """Once the job (run by in_background) has finished an epoch, cancel it; it ends cancelled."""
    progress = lambda: svc.client.get(f"/v1/jobs/{job_id}", headers=svc.a).json()["progress"] or {}  # noqa: E731
    wait(lambda: progress().get("epoch", 0) >= 1, 90, "an epoch")
    assert svc.client.post(f"/v1/jobs/{job_id}/cancel", headers=svc.a).status_code in (200, 202)
    thread.join(60)
    assert ended == ["cancelled"]


def launch_pids(svc, job_id: str, launch: int) -> list[int] | None:
    path = run_dir(svc.settings, job_id) / f"attempt1-launch{launch}" / "pids.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_batch_size_must_divide_and_processes_are_bounded(svc):
    data = svc.dataset(iris_like(40))
    r = svc.submit(data["id"], batch_size=5, **TWO)
    assert r.status_code == 422 and "batch_size 5 does not divide among distributed.processes 2" in r.text
    r = svc.submit(data["id"], batch_size=18, distributed={"processes": 9})
    assert r.status_code == 422 and "at most 4 processes (max_processes)" in r.text


def test_two_processes_train_to_the_weights_of_one(svc):
    data = svc.dataset(iris_like(40))
    body = {"batch_size": 8, "epochs": 3, "validation_split": 0.2, "optimizer": {"type": "sgd", "lr": 0.1,
                                                                              "momentum": 0.9}}
    ids = []
    for distributed in ({"processes": 2}, {"processes": 1}):
        r = svc.submit(data["id"], distributed=distributed, **body)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
        assert runner.run_job(svc.settings, ids[-1], CPU) == "succeeded"
    two, one = (load_file(str(artifacts.resolve(svc.settings, artifacts.weights_relpath(i)))) for i in ids)
    assert set(two) == set(one)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)
    curves = [svc.client.get(f"/v1/jobs/{i}/metrics", headers=svc.a).json() for i in ids]
    series_two, series_one = (c["epochs"] for c in curves)
    for a, b in zip(series_two, series_one):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert abs(a["val_accuracy"] - b["val_accuracy"]) <= 1 / 8     # a float32 tie may flip one of 8 rows
    last = series_two[-1]
    assert last["world_size"] == 2 and len(last["rank_step_time_s"]) == 2 and min(last["rank_step_time_s"]) > 0
    assert rank_slots.held(svc.settings) == {}            # freed when the ranks ended


def test_slots_are_reserved_all_or_nothing(service_factory):
    svc = service_factory(rank_slots=3)
    data = svc.dataset(iris_like(40))
    first, second = (svc.submit(data["id"], **TWO).json()["id"] for _ in range(2))
    with svc.session() as s:
        for job_id in (first, second):
            s.get(Job, job_id).status, s.get(Job, job_id).attempts = JobStatus.RUNNING, 1
        s.commit()
    assert rank_slots.reserve(svc.settings, first, 1, 2) == [0, 1]
    assert rank_slots.reserve(svc.settings, second, 1, 2) is None      # one is free: it takes none
    assert rank_slots.held(svc.settings) == {0: first, 1: first}
    with svc.session() as s:                   # the first attempt ended without freeing (its worker died)
        s.get(Job, first).status = JobStatus.FAILED
        s.commit()
    assert rank_slots.reserve(svc.settings, second, 1, 2) == [0, 1]
    assert rank_slots.release(svc.settings, second, 1) == 2


@pytest.mark.timeout(180)
def test_a_killed_rank_stops_the_others_and_the_job_resumes_from_its_checkpoint(svc):
    data = svc.dataset(iris_like(40))
    job_id = svc.submit(data["id"], batch_size=8, epochs=400, **TWO).json()["id"]
    thread, ended = in_background(svc, job_id)
    checkpoint = artifacts.resolve(svc.settings, artifacts.checkpoint_relpath(job_id))
    pids = wait(lambda: checkpoint.exists() and launch_pids(svc, job_id, 0), 90, "a checkpoint")
    os.kill(pids[1], 9)
    killed_at = time.monotonic()
    wait(lambda: not alive(pids[0]), 10, "rank 0 to stop")
    assert time.monotonic() - killed_at < 10
    again = wait(lambda: launch_pids(svc, job_id, 1), 30, "the relaunch")
    assert len(again) == 2
    thread.join(150)
    assert ended == ["succeeded"]
    job = svc.client.get(f"/v1/jobs/{job_id}", headers=svc.a).json()
    assert job["result"]["resumed_from_epoch"] >= 1 and job["progress"]["epoch"] == 400


@pytest.mark.timeout(180)
def test_cancel_stops_every_rank(svc):
    data = svc.dataset(iris_like(40))
    job_id = svc.submit(data["id"], batch_size=8, epochs=5000, **TWO).json()["id"]
    thread, ended = in_background(svc, job_id)
    pids = wait(lambda: launch_pids(svc, job_id, 0), 60, "the ranks")
    cancel_after_an_epoch(svc, job_id, thread, ended)
    assert not any(alive(pid) for pid in pids)
