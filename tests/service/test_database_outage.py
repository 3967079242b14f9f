"""A database outage is a 503 with Retry-After, and a worker waits for the database instead of taking
messages it cannot act on (issue 8, point 4). The PostgreSQL server is this module's own; the tests
shut it down and start it again."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from core.tables import Job
from e2e_support import CEILING_S, HANG_GUARD_S
from worker import runner

from conftest import iris_like, make_service, no_thread_path

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(HANG_GUARD_S)]


@pytest.fixture
def outage_svc(tmp_path, own_pg_server):
    svc = make_service(tmp_path, database_url=own_pg_server.create_database(), database_patience_s=60)
    yield svc
    svc.client.close()


def test_requests_during_a_database_outage_are_503_with_retry_after(outage_svc, own_pg_server):
    svc = outage_svc
    job = svc.submit(svc.dataset(iris_like(), "iris.csv")["id"]).json()
    assert svc.client.get(f"/v1/jobs/{job['id']}", headers=svc.a).status_code == 200   # key a is cached now
    own_pg_server.pause()
    try:
        for method, url, headers in [("GET", f"/v1/jobs/{job['id']}", svc.a), ("GET", "/v1/jobs", svc.a),
                                     ("POST", f"/v1/jobs/{job['id']}/cancel", svc.a),
                                     ("GET", "/v1/datasets", svc.b)]:   # key b: its lookup needs the database
            r = svc.client.request(method, url, headers=headers)
            assert r.status_code == 503, (method, url, r.status_code, r.text)
            assert int(r.headers["retry-after"]) > 0 and "database is unavailable" in r.json()["detail"]
    finally:
        own_pg_server.resume()
    assert svc.client.get(f"/v1/jobs/{job['id']}", headers=svc.a).json()["status"] == "queued"


def test_a_worker_waits_for_the_database_then_trains_the_job(outage_svc, own_pg_server):
    """The message's claim is retried while the database is down (the worker holds that one message,
    takes no other) and succeeds once it is back: the job trains, nothing is dropped."""
    svc = outage_svc
    job = svc.submit(svc.dataset(iris_like(), "iris.csv")["id"]).json()
    own_pg_server.pause()
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(
        _run(svc.settings, job["id"])), daemon=True)
    try:
        worker.start()
        time.sleep(2.0)
        assert worker.is_alive() and not outcome      # still waiting, the message in hand
    finally:
        own_pg_server.resume()
    worker.join(CEILING_S)                            # until it has trained: a ceiling, never reached when it passes
    assert outcome == ["succeeded"]
    with svc.session() as s:
        assert s.get(Job, job["id"]).status == "succeeded"


def _run(settings, job_id: str) -> str:
    try:
        return runner.run_job(settings, job_id, torch.device("cpu"))
    except Exception as exc:  # noqa: BLE001 - the outcome the test reports
        return f"raised {type(exc).__name__}"



def test_pooled_connections_are_pinged_only_after_idling_and_replaced_when_cut(pg_server, monkeypatch):
    # a connection in steady use goes out unpinged (a ping is a round trip per request); one idle
    # PING_AFTER_IDLE_S is pinged first, and one the server cut meanwhile (as a restart cuts them) is
    # replaced: the query answers
    import psycopg
    from sqlalchemy import text

    from core import db
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.3)
    engine = db.get_engine(pg_server.create_database())
    pings = []
    do_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append(1) or do_ping(conn))

    def backend_pid() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT pg_backend_pid()")).scalar()
    first = backend_pid()
    pings.clear()
    assert [backend_pid() for _ in range(5)] == [first] * 5 and pings == []     # steady use: no ping
    with psycopg.connect(pg_server.admin_dsn(), autocommit=True) as admin:       # the server cuts it
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    time.sleep(0.4)
    assert backend_pid() != first and pings == [1]
    engine.dispose()


def test_status_polls_through_the_asyncio_pool_are_503_in_an_outage_and_200_right_after(outage_svc, own_pg_server,
                                                                                        monkeypatch):
    """GET /v1/jobs/{id} reads through core.poll_reads where the app's lifespan ran (a served API):
    the same 503 as every other read while the database is down, and answers again once it is back."""
    from fastapi.testclient import TestClient

    from api.routes import jobs as jobs_routes

    svc = outage_svc
    job = svc.submit(svc.dataset(iris_like(), "iris.csv")["id"]).json()
    monkeypatch.setattr(jobs_routes, "run_in_threadpool", no_thread_path)    # only the pool may answer
    with TestClient(svc.client.app) as pooled:              # runs the lifespan: the pool opens
        assert pooled.get(f"/v1/jobs/{job['id']}", headers=svc.a).json()["status"] == "queued"
        own_pg_server.pause()
        try:
            for _ in range(3):
                r = pooled.get(f"/v1/jobs/{job['id']}", headers=svc.a)
                assert r.status_code == 503, r.text
                assert int(r.headers["retry-after"]) > 0 and "database is unavailable" in r.json()["detail"]
        finally:
            own_pg_server.resume()
        started = time.monotonic()
        r = pooled.get(f"/v1/jobs/{job['id']}", headers=svc.a)
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
        print(f"\n[measured] first poll after the restart answered in {time.monotonic() - started:.2f} s")
