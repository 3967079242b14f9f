"""One job's ranks on two workers (issue 19, across machines), on this machine: worker "a" (the job's
supervisor: a real `chainrule worker --queues cpu,auto` process for the jobs submitted through the API, or
runner.run_job in this process, as its Celery task runs it, where a test reads what it returns) and worker
"b" (a real `chainrule worker --queues ranks` process), each with its own data dir and rank_host, rank_slots=1 each,
sharing the database, the broker's store and the artifact store, the ranks' TCPStore on loopback.
A `processes: 2` job runs rank 0 on a and rank 1 on b (a `chainrule.rank` task) and ends with the weights
of a one-process run; b with no free slot hands the job back within b's distributed_remote_wait_s instead
of waiting; b's rank SIGKILLed mid-run stops rank 0 within seconds and the job resumes and succeeds; b
itself SIGKILLed stops rank 0 and the job goes back to the queue. The supervisor's reading of the store
(a beat that stops, a rank never taken) is tested on a real TCPStore."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from core import artifacts, rank_slots, workers
from core.lifecycle import JobStatus
from core.settings import Settings
from core.tables import Job
from worker import runner
from worker.ranks import run_dir
from worker.remote_rank import NoRemoteSlot, Remote, abort_key, beat_key, describe, exit_key, task

from conftest import iris_like
from test_distributed_jobs import CPU, TWO, alive, cancel_after_an_epoch, in_background, launch_pids, wait

pytestmark = pytest.mark.timeout(240)
BODY = {"batch_size": 8, "validation_split": 0.2, "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9}}


@pytest.fixture
def two_workers(service_factory, tmp_path):
    """two_workers(**a_settings) -> (svc of worker a, spawn, worker b's process, b's data dir): b runs,
    spawn(name, data_dir, rank_host, queues) starts another `chainrule worker`; all are killed after."""
    started = []

    def spawn(name: str, data_dir, host: str, queues: str, svc) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINRULE_")}
        env.update({"CHAINRULE_DATA_DIR": str(data_dir), "CHAINRULE_DATABASE_URL": svc.settings.database_url,
                    "CHAINRULE_BROKER_DIR": str(svc.settings.broker_dir),
                    "CHAINRULE_ARTIFACTS_DIR": str(svc.settings.artifacts_dir), "CHAINRULE_RANK_HOST": host,
                    "CHAINRULE_RANK_SLOTS": "1", "CHAINRULE_DISTRIBUTED_REMOTE_WAIT_S": "3",
                    "CHAINRULE_WORKER_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        data_dir.mkdir(exist_ok=True)
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "chainrule.cli", "worker", "--queues", queues,
                                     "--device", "cpu"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        started.append((name, proc))
        wait(lambda: proc.poll() is not None or "ready." in log.read_text(), 120, f"worker {name}")
        assert proc.poll() is None, log.read_text()
        return proc

    def start(**a_settings):
        svc = service_factory(rank_slots=1, rank_host="a", **a_settings)
        b = spawn("b", tmp_path / "b", "b", "ranks", svc)
        wait(lambda: workers.take_ranks_elsewhere(svc.settings, "a"), 60, "worker b in the registry")
        return svc, lambda name, data_dir, host, queues: spawn(name, data_dir, host, queues, svc), b, tmp_path / "b"

    yield start
    for name, proc in started:     # killed (a warm shutdown takes seconds): its rank, if any, exits as an orphan
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        print(f"--- worker {name}\n" + (tmp_path / f"{name}.log").read_text()[-4000:])


def remote_pid(b_dir, job_id: str, launch: int) -> int | None:
    path = b_dir / "ranks" / job_id / f"attempt1-launch{launch}" / "rank1.pid"
    return int(path.read_text()) if path.exists() else None


def checkpointed_remote_rank(svc, b_dir, job_id: str) -> int:
    """The pid of the job's rank 1 on b, once the job has written a checkpoint to resume from."""
    checkpoint = artifacts.resolve(svc.settings, artifacts.checkpoint_relpath(job_id))
    return wait(lambda: checkpoint.exists() and remote_pid(b_dir, job_id, 0), 120, "a checkpoint")


def test_two_workers_run_one_rank_each_to_the_weights_of_one_process(two_workers):
    """Worker a a real process too (svc's data dir, queues cpu,auto): the jobs go through the API."""
    svc, spawn, _, b_dir = two_workers()
    a = spawn("a", svc.settings.data_dir, "a", "cpu,auto")
    data = svc.dataset(iris_like(40))
    ids = []
    for distributed in ({"processes": 2}, {"processes": 1}):
        r = svc.submit(data["id"], distributed=distributed, epochs=3, **BODY)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
        status = lambda: svc.client.get(f"/v1/jobs/{ids[-1]}", headers=svc.a).json()["status"]  # noqa: E731
        assert wait(lambda: status() in ("succeeded", "failed", "cancelled") and status(), 180,
                    "the job to end") == "succeeded"
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
    a.kill()                        # what follows runs a's task body here, to read what it returns
    a.wait()

    # b's one slot is held by a running job: b's rank waits its distributed_remote_wait_s (3 s), says so,
    # and a hands the job back (its slot freed) instead of waiting with it
    holder = svc.submit(data["id"], **TWO).json()["id"]
    with svc.session() as s:
        s.get(Job, holder).status, s.get(Job, holder).attempts = JobStatus.RUNNING, 1
        s.commit()
    assert rank_slots.reserve(svc.settings, holder, 1, 1, host="b") == [0]
    job_id = svc.submit(data["id"], epochs=3, **TWO, **BODY).json()["id"]
    started = time.monotonic()
    assert runner.run_job(svc.settings, job_id, CPU) == "queued"
    print(f"handed back after {time.monotonic() - started:.1f} s")
    assert rank_slots.held(svc.settings, "a") == {}
    assert not alive(launch_pids(svc, job_id, 0)[0])


def test_a_killed_remote_rank_stops_rank_0_and_the_job_resumes(two_workers):
    svc, _, _, b_dir = two_workers()
    data = svc.dataset(iris_like(40))
    job_id = svc.submit(data["id"], epochs=200, **TWO, **BODY).json()["id"]
    thread, ended = in_background(svc, job_id)
    pid = checkpointed_remote_rank(svc, b_dir, job_id)
    local = launch_pids(svc, job_id, 0)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait(lambda: not alive(local[0]), 15, "rank 0 to stop")
    print(f"rank 0 stopped {time.monotonic() - killed_at:.1f} s after rank 1 was killed")
    wait(lambda: remote_pid(b_dir, job_id, 1), 60, "the relaunch on b")
    thread.join(180)
    assert ended == ["succeeded"]
    job = svc.client.get(f"/v1/jobs/{job_id}", headers=svc.a).json()
    assert job["result"]["resumed_from_epoch"] >= 1 and job["progress"]["epoch"] == 200
    assert run_dir(svc.settings, job_id).exists()


def test_a_killed_remote_worker_stops_rank_0_and_the_job_goes_back_to_the_queue(two_workers):
    """b SIGKILLed with its rank: rank 0 stops within seconds, the relaunch's rank 1 finds no worker within
    a's distributed_remote_wait_s, and the job is handed back (queued, its slots free): never stuck."""
    svc, _, b, b_dir = two_workers(distributed_remote_wait_s=5)
    data = svc.dataset(iris_like(40))
    job_id = svc.submit(data["id"], epochs=400, **TWO, **BODY).json()["id"]
    thread, ended = in_background(svc, job_id)
    pid = checkpointed_remote_rank(svc, b_dir, job_id)
    local = launch_pids(svc, job_id, 0)
    os.kill(b.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait(lambda: not alive(local[0]) and not alive(pid), 15, "both ranks to stop")
    print(f"both ranks stopped {time.monotonic() - killed_at:.1f} s after worker b was killed")
    thread.join(120)
    assert ended == ["queued"]
    print(f"handed back {time.monotonic() - killed_at:.1f} s after worker b was killed")
    assert rank_slots.held(svc.settings, "a") == {}
    with svc.session() as s:
        assert s.get(Job, job_id).status == JobStatus.QUEUED


def test_cancel_stops_the_remote_rank_too(two_workers):
    svc, _, _, b_dir = two_workers()
    data = svc.dataset(iris_like(40))
    job_id = svc.submit(data["id"], epochs=5000, **TWO, **BODY).json()["id"]
    thread, ended = in_background(svc, job_id)
    pid = wait(lambda: remote_pid(b_dir, job_id, 0), 120, "rank 1 on b")
    cancel_after_an_epoch(svc, job_id, thread, ended)
    wait(lambda: not alive(pid), 15, "rank 1 on b to stop")
    assert not alive(launch_pids(svc, job_id, 0)[0])
    wait(lambda: rank_slots.held(svc.settings, "b") == {}, 15, "b's slot to be freed")


def test_the_supervisor_reads_remote_ranks_from_the_store(tmp_path):
    """worker.remote_rank.Remote on a real TCPStore, the keys written as a taker writes them: a rank never
    taken and a slot never found end the launch (NoRemoteSlot), a beat that stops is a dead rank, an
    exit is read as one."""
    settings = Settings(data_dir=tmp_path, distributed_remote_wait_s=1.0, distributed_remote_stale_s=1.0)
    store = dist.TCPStore("127.0.0.1", 0, world_size=None, is_master=True, timeout=timedelta(seconds=5),
                          wait_for_workers=False)
    remote = Remote(settings, store, "1-0", range(1, 3))
    assert remote.poll() == {1: None, 2: None}
    store.add(beat_key("1-0", 1), 1)
    time.sleep(1.2)
    with pytest.raises(NoRemoteSlot, match="no worker took rank 2 from the ranks queue within 1 s"):
        remote.poll()
    store.add(beat_key("1-0", 2), 1)
    remote.beats[2] = (0, time.monotonic())       # as if rank 2 had been sent just now
    states = remote.poll()
    assert states[2] is None and states[1] is None   # rank 1's beat was seen at the last poll: fresh
    time.sleep(1.2)
    states = remote.poll()
    assert states[1].startswith("no heartbeat for") and states[2].startswith("no heartbeat for")
    store.set(exit_key("1-0", 1), "-9")
    store.set(exit_key("1-0", 2), "0")
    states = remote.poll()
    assert states == {1: "-9", 2: 0} and describe(1, states[1]) == "rank 1 was killed by signal 9"
    assert describe(0, -9) == "rank 0 was killed by signal 9" and describe(0, 3) == "rank 0 exited with 3"  # a Popen's
    store.set(exit_key("1-0", 2), "noslot: no rank slot of b was free within 3 s")
    with pytest.raises(NoRemoteSlot, match="rank 2: noslot: no rank slot of b"):
        remote.poll()


def test_a_worker_of_the_supervisors_host_passes_the_order_on(service_factory):
    """Its host had no slot left: while the launch is on, the order goes back on the ranks queue for
    another host's worker; once it is aborted, the order is dropped."""
    svc = service_factory(rank_host="a")
    store = dist.TCPStore("127.0.0.1", 0, world_size=None, is_master=True, timeout=timedelta(seconds=5),
                          wait_for_workers=False)
    store.set("launch", "1-0")
    order = {"job": "j", "attempt": 1, "requested": "cpu", "queue": "cpu", "device": "cpu", "launch": "1-0",
             "rank": 1, "world": 2, "store_host": "127.0.0.1", "store_port": store.port, "host": "a"}
    assert task(svc.settings, order, CPU) == "passed on"
    assert len(list((svc.settings.broker_dir / "queue").glob("*.ranks.msg"))) == 1
    store.set(abort_key("1-0"), "1")
    assert task(svc.settings, order, CPU) == "stale"
    assert len(list((svc.settings.broker_dir / "queue").glob("*.ranks.msg"))) == 1
