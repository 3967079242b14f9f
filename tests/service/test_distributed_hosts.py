"""One job's ranks on two workers (issue 19, across machines), on this machine: worker "a" (the job's
supervisor: runner.run_job in this process, as its Celery task runs it) and worker "b" (a real
`chainrule worker --queues ranks` process), each with its own data dir and rank_host, rank_slots=1 each,
sharing the database, the broker's store and the artifact store, the ranks' TCPStore on loopback.
A `processes: 2` job runs rank 0 on a and rank 1 on b (a `chainrule.rank` task) and ends with the weights
of a one-process run; b with no free slot hands the job back within b's distributed_remote_wait_s instead
of waiting; b's rank SIGKILLed mid-run stops rank 0 within seconds and the job resumes and succeeds."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
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
from test_distributed_jobs import CPU, TWO, alive, in_background, launch_pids, wait

pytestmark = pytest.mark.timeout(240)
BODY = {"batch_size": 8, "validation_split": 0.2, "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9}}


@pytest.fixture
def hosts(service_factory, tmp_path):
    """(svc of worker a, worker b's data dir); b is stopped after the test."""
    svc = service_factory(rank_slots=1, rank_host="a")
    b_dir = tmp_path / "b"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINRULE_")}
    env.update({"CHAINRULE_DATA_DIR": str(b_dir), "CHAINRULE_DATABASE_URL": svc.settings.database_url,
                "CHAINRULE_BROKER_DIR": str(svc.settings.broker_dir),
                "CHAINRULE_ARTIFACTS_DIR": str(svc.settings.artifacts_dir), "CHAINRULE_RANK_HOST": "b",
                "CHAINRULE_RANK_SLOTS": "1", "CHAINRULE_DISTRIBUTED_REMOTE_WAIT_S": "3",
                "CHAINRULE_WORKER_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    b_dir.mkdir()
    with open(tmp_path / "b.log", "wb") as out:
        b = subprocess.Popen([sys.executable, "-m", "chainrule.cli", "worker", "--queues", "ranks", "--device", "cpu"],
                             env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    yield svc, b_dir
    b.send_signal(signal.SIGTERM)
    try:
        b.wait(30)
    except subprocess.TimeoutExpired:
        b.kill()
        b.wait()
    print((tmp_path / "b.log").read_text()[-4000:])


def remote_pid(b_dir, job_id: str, launch: int) -> int | None:
    path = b_dir / "ranks" / job_id / f"attempt1-launch{launch}" / "rank1.pid"
    return int(path.read_text()) if path.exists() else None


def test_two_workers_run_one_rank_each_to_the_weights_of_one_process(hosts):
    svc, b_dir = hosts
    data = svc.dataset(iris_like(40))
    ids = []
    for distributed in ({"processes": 2}, {"processes": 1}):
        ids.append(svc.submit(data["id"], distributed=distributed, epochs=3, **BODY).json()["id"])
        assert runner.run_job(svc.settings, ids[-1], CPU) == "succeeded"
    two, one = (load_file(str(artifacts.resolve(svc.settings, artifacts.weights_relpath(i)))) for i in ids)
    assert set(two) == set(one)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)
    assert len(launch_pids(svc, ids[0], 0)) == 1                  # rank 0 on a
    assert remote_pid(b_dir, ids[0], 0) is not None               # rank 1 on b, its log in b's data dir
    assert (b_dir / "ranks" / ids[0] / "attempt1-launch0" / "rank1.log").exists()
    last = svc.client.get(f"/v1/jobs/{ids[0]}/metrics", headers=svc.a).json()["epochs"][-1]
    assert last["world_size"] == 2 and len(last["rank_step_time_s"]) == 2
    assert rank_slots.held(svc.settings, "a") == {} and rank_slots.held(svc.settings, "b") == {}

    # b's one slot is held by a running job: b's rank waits its distributed_remote_wait_s (3 s), says so,
    # and a hands the job back (its slot freed) instead of waiting with it
    holder = svc.submit(data["id"], **TWO).json()["id"]
    with svc.session() as s:
        s.get(Job, holder).status, s.get(Job, holder).attempts = JobStatus.RUNNING, 1
        s.commit()
    assert rank_slots.reserve(svc.settings, holder, 1, 1, host="b") == [0]
    job_id = svc.submit(data["id"], epochs=3, **TWO, **{k: v for k, v in BODY.items()}).json()["id"]
    started = time.monotonic()
    assert runner.run_job(svc.settings, job_id, CPU) == "queued"
    print(f"handed back after {time.monotonic() - started:.1f} s")
    assert rank_slots.held(svc.settings, "a") == {}
    assert not alive(launch_pids(svc, job_id, 0)[0])


def test_a_killed_remote_rank_stops_rank_0_and_the_job_resumes(hosts):
    svc, b_dir = hosts
    data = svc.dataset(iris_like(40))
    job_id = svc.submit(data["id"], epochs=400, **TWO, **BODY).json()["id"]
    thread, ended = in_background(svc, job_id)
    checkpoint = artifacts.resolve(svc.settings, artifacts.checkpoint_relpath(job_id))
    pid = wait(lambda: checkpoint.exists() and remote_pid(b_dir, job_id, 0), 120, "a checkpoint")
    local = launch_pids(svc, job_id, 0)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait(lambda: not alive(local[0]), 15, "rank 0 to stop")
    print(f"rank 0 stopped {time.monotonic() - killed_at:.1f} s after rank 1 was killed")
    wait(lambda: remote_pid(b_dir, job_id, 1), 60, "the relaunch on b")
    thread.join(180)
    assert ended == ["succeeded"]
    job = svc.client.get(f"/v1/jobs/{job_id}", headers=svc.a).json()
    assert job["result"]["resumed_from_epoch"] >= 1 and job["progress"]["epoch"] == 400
    assert run_dir(svc.settings, job_id).exists()
