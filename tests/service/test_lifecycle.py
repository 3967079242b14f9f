"""The job lifecycle's moves and the reconciler's rules (the worker's claim, fencing, recovery), in process against a real SQLite database
made by the migrations and the real embedded broker (messages are files we can count)."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import torch

from core import lifecycle, reconciler, workers
from core.db import get_engine, get_sessionmaker, upgrade
from core.keys import create_key
from core.lifecycle import JobStatus
from core.tables import Job, utcnow
from core.settings import Settings
from worker import runner
from worker.callbacks import Heartbeat

from conftest import at_once

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def world(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", heartbeat_timeout_s=3, resend_after_s=10, max_attempts=3)
    upgrade(settings.database_url)
    Session = get_sessionmaker(settings.database_url)
    with Session() as s:
        owner, _ = create_key(s, "reconciler-test", settings)
    workers.beat(settings, ["cpu", "auto"], "cpu")     # a live cpu worker: jobs wait for no one

    class World:
        def __init__(self):
            self.settings = settings

        def add(self, **fields) -> str:
            row = dict(owner_id=owner.id, dataset_id=None, status="queued", request={"epochs": 1},
                       device="cpu", queue="cpu", n_parameters=1, max_attempts=3)
            row.update(fields)
            with Session() as s:
                job = Job(**row)
                s.add(job)
                s.commit()
                return job.id

        def get(self, job_id: str) -> Job:
            with Session() as s:
                return s.get(Job, job_id)

        def messages(self, queue: str = "cpu") -> list[str]:
            """The job ids waiting in the embedded broker's queue folder."""
            import json
            import base64
            out = []
            for path in sorted((settings.broker_dir / "queue").glob(f"*.{queue}.msg")):
                payload = json.loads(path.read_text())
                body = json.loads(base64.b64decode(payload["body"]))
                out.append(body[0][0])
            return out

    yield World()
    get_engine(settings.database_url).dispose()


def ago(seconds: float):
    return utcnow() - timedelta(seconds=seconds)


def sweep_concurrently(settings: Settings, n: int = 4) -> None:
    at_once(lambda: reconciler.reconcile(settings), n)


def test_unsent_job_is_sent_once_even_by_concurrent_reconcilers(world):
    unsent = world.add(created_at=ago(5), sent_at=None)
    just_made = world.add(created_at=ago(0.2), sent_at=None)  # the API is about to send it itself
    sweep_concurrently(world.settings)
    assert world.messages() == [unsent]
    assert world.get(unsent).sent_at is not None
    assert world.get(just_made).sent_at is None


def test_resend_backs_off_with_the_time_already_waited(world):
    young = world.add(created_at=ago(15), sent_at=ago(11))   # waited 4 s before its send: resend after 10
    old = world.add(created_at=ago(50), sent_at=ago(11))     # waited 39 s: resend after 39 s, not yet
    before = world.get(old).sent_at
    reconciler.reconcile(world.settings)
    assert world.messages() == [young] and world.get(old).sent_at == before   # not sent again yet
    assert reconciler.resend_interval(world.settings, ago(50), ago(11)) == pytest.approx(39, abs=1)
    assert reconciler.resend_interval(world.settings, ago(10**6), ago(0)) == world.settings.max_resend_interval_s


def test_a_job_of_any_age_is_resent_within_the_cap(world):
    """A job queued for two hours whose message was lost (consumed by a worker that could not reach
    the database) is sent again max_resend_interval_s after its last send, not an hour later."""
    old = world.add(created_at=ago(7200), sent_at=ago(world.settings.max_resend_interval_s + 1))
    reconciler.reconcile(world.settings)
    assert world.messages() == [old]


def test_stale_running_job_is_requeued_with_a_note_and_sent(world):
    stale = world.add(status="running", attempts=1, heartbeat_at=ago(10), started_at=ago(20),
                      worker_host="box-1", epoch=4)
    fresh = world.add(status="running", attempts=1, heartbeat_at=ago(0.5), started_at=ago(20))
    sweep_concurrently(world.settings)
    job = world.get(stale)
    assert job.status == "queued" and job.attempts == 1 and job.error_code is None
    assert "box-1" in job.result["note"]
    assert job.result["retries"][0]["attempt"] == 1 and job.result["retries"][0]["epoch"] == 4
    assert world.messages() == [stale]                    # sent once, by one of the four reconcilers
    assert world.get(fresh).status == "running"


def test_stale_job_out_of_attempts_fails_worker_lost(world):
    job_id = world.add(status="running", attempts=3, max_attempts=3, heartbeat_at=ago(60),
                       started_at=ago(100), worker_host="gpu-box-7")
    summary = reconciler.reconcile(world.settings)
    assert summary.failed == [job_id]
    job = world.get(job_id)
    assert job.status == "failed" and job.error_code == "worker_lost" and job.finished_at is not None
    assert "host gpu-box-7" in job.error_message and "gave up after 3 attempts" in job.error_message
    assert "last heartbeat at" in job.error_message
    assert world.messages() == []


def test_cancel_requests_are_honoured_for_lost_and_queued_jobs(world):
    lost = world.add(status="running", attempts=1, heartbeat_at=ago(60), cancel_requested=True)
    queued = world.add(status="queued", cancel_requested=True, created_at=ago(5))
    reconciler.reconcile(world.settings)
    assert world.get(lost).status == "cancelled"
    assert world.get(queued).status == "cancelled"
    assert world.messages() == []


def test_claim_is_atomic_and_a_duplicate_message_is_a_no_op(world):
    job_id = world.add(created_at=ago(1), sent_at=ago(1))
    cpu = torch.device("cpu")
    results = []
    barrier = threading.Barrier(4)

    def take():
        barrier.wait()
        results.append(runner.claim(world.settings, job_id, cpu))
    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [c for c in results if c is not None]
    assert len(won) == 1 and won[0].attempt == 1
    job = world.get(job_id)
    assert job.status == "running" and job.attempts == 1 and job.worker_device == "cpu"
    assert runner.claim(world.settings, job_id, cpu) is None           # later duplicate


def test_cuda_job_is_not_claimed_by_a_cpu_worker(world):
    job_id = world.add(device="cuda", queue="gpu")
    assert runner.claim(world.settings, job_id, torch.device("cpu")) is None
    assert world.get(job_id).status == "queued"


def test_a_worker_the_reconciler_gave_up_on_cannot_touch_the_job(world):
    job_id = world.add()
    claim = runner.claim(world.settings, job_id, torch.device("cpu"))
    hb = Heartbeat(world.settings, claim)
    hb.beat()
    assert not hb.lost
    with get_sessionmaker(world.settings.database_url)() as s:   # the heartbeat goes stale
        s.get(Job, job_id).heartbeat_at = ago(60)
        s.commit()
    reconciler.reconcile(world.settings)
    assert world.get(job_id).status == "queued"
    second = runner.claim(world.settings, job_id, torch.device("cpu"))
    assert second.attempt == 2
    # the first worker wakes up: its heartbeat finds the row is not its own, its outcome is dropped
    hb.beat()
    assert hb.lost
    assert lifecycle.finish(world.settings, claim, JobStatus.SUCCEEDED) is False
    job = world.get(job_id)
    assert job.status == "running" and job.attempts == 2


def test_heartbeat_reads_cancel_and_throttles_progress(world):
    from engine.train import Progress
    job_id = world.add()
    claim = runner.claim(world.settings, job_id, torch.device("cpu"))
    hb = Heartbeat(world.settings.model_copy(update={"progress_interval_s": 3600}), claim)
    hb.progress = Progress(epoch=1, epochs=5, step=10, total_steps=50, fraction=0.2)
    hb._progress_at = -1e9
    hb.beat()
    assert world.get(job_id).step == 10
    hb.progress = Progress(epoch=2, epochs=5, step=20, total_steps=50, fraction=0.4)
    hb.beat()                                   # within progress_interval_s: heartbeat only
    assert world.get(job_id).step == 10
    with get_sessionmaker(world.settings.database_url)() as s:
        s.get(Job, job_id).cancel_requested = True
        s.commit()
    hb.beat()
    assert hb.cancel_requested
