"""core.poll_reads, the status poll's asyncio read on PostgreSQL: the same answer as SQLAlchemy's
read, byte for byte, another key's job a 404 as ever, and a full pool `Busy` (503 "busy"), not an outage."""
from __future__ import annotations

import asyncio

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.routes import jobs as jobs_routes

from core.db import Busy, is_busy, is_unavailable, upgrade
from core.poll_reads import PollReads, libpq_conninfo
from core.tables import Job, utcnow

from conftest import iris_like, no_thread_path

pytestmark = pytest.mark.postgres


def test_the_pools_answer_is_sqlalchemys_byte_for_byte(service_factory, pg_server, monkeypatch):
    svc = service_factory(database_url=pg_server.create_database())
    ds = svc.dataset(iris_like(), "iris.csv")
    ids = [svc.submit(ds["id"]).json()["id"] for _ in range(4)]
    with svc.session() as s:        # queued, running with progress, succeeded with a result, failed
        running, done, failed = (s.get(Job, i) for i in ids[1:])
        running.status, running.started_at, running.epoch, running.step, running.fraction = "running", utcnow(), 3, 12, 0.25
        running.latest_metrics = {"loss": 0.5, "val_accuracy": 0.75}
        done.status, done.finished_at, done.result = "succeeded", utcnow(), {"epochs_completed": 8, "final": {"loss": 0.1}}
        failed.status, failed.error_code, failed.error_message = "failed", "non_finite", "loss is nan at step 3"
        s.commit()
    plain = {i: svc.client.get(f"/v1/jobs/{i}", headers=svc.a).content for i in ids}   # no lifespan: SQLAlchemy
    monkeypatch.setattr(jobs_routes, "run_in_threadpool", no_thread_path)     # from here only the pool answers
    with TestClient(svc.client.app) as pooled:                                          # lifespan: the pool
        for i in ids:
            assert pooled.get(f"/v1/jobs/{i}", headers=svc.a).content == plain[i]
        reads = pooled.app.state.poll_reads
        assert pooled.get(f"/v1/jobs/{ids[0]}", headers=svc.b).status_code == 404      # another key's
        assert pooled.get("/v1/jobs/00000000-0000-4000-8000-000000000000", headers=svc.a).status_code == 404
    assert pooled.app.state.poll_reads is None and not reads._idle        # closed with the app


def test_a_pool_whose_every_connection_is_in_use_is_busy_and_a_dead_server_unavailable(pg_server):
    url = pg_server.create_database()
    upgrade(url)

    async def main():
        reads = PollReads(url, max_size=1, timeout_s=0.2)
        await reads.open()
        with psycopg.connect(libpq_conninfo(url), autocommit=True) as locker:
            locker.execute("BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")   # a read that hangs
            held = asyncio.create_task(reads.job_row("x"))     # takes the one connection, and waits
            await asyncio.sleep(0.3)
            with pytest.raises(Busy) as busy:
                await reads.job_row("y")
            locker.execute("ROLLBACK")
        assert await held is None
        assert await reads.job_row("z") is None          # free again: it reads
        await reads.close()
        gone = PollReads("postgresql+psycopg://nobody@127.0.0.1:9/none", max_size=1, timeout_s=0.2)
        await gone.open()
        with pytest.raises(psycopg.OperationalError) as down:
            await gone.job_row("x")
        return busy.value, down.value
    busy, down = asyncio.run(main())
    assert is_busy(busy) and "1 status-poll connections" in str(busy)
    assert is_unavailable(down) and not is_busy(down), repr(down)
