"""The status poll's fast path (a hand-serialized single-row read) gives the same answer as the ORM
path, scoped to the key; on PostgreSQL it reads outside a transaction. Its latency is measured in
bench/service_latency.py, not here."""
from __future__ import annotations

import pytest

from conftest import iris_like, make_service


def test_status_poll_answers_the_owner_only_and_matches_the_list(svc, iris):
    job = svc.submit(iris["id"]).json()
    url = f"/v1/jobs/{job['id']}"
    first = svc.client.get(url, headers=svc.a)                       # reads the key, then caches it
    assert first.status_code == 200 and first.json() == job
    assert svc.client.get(url, headers=svc.b).status_code == 404     # another key's job, on the same path
    svc.client.post(f"{url}/cancel", headers=svc.a)
    again = svc.client.get(url, headers=svc.a).json()                # the cached key, a fresh row
    assert again["status"] == "cancelled" and again == svc.client.get(
        "/v1/jobs?fields=request&fields=init_report", headers=svc.a).json()["items"][0]


@pytest.mark.postgres
def test_status_poll_on_postgres_runs_outside_a_transaction(tmp_path, pg_server):
    """One SELECT in autocommit: no BEGIN before it and no ROLLBACK after it (two round trips)."""
    from sqlalchemy import event

    from core.db import get_engine

    svc = make_service(tmp_path, database_url=pg_server.create_database())
    try:
        job = svc.submit(svc.dataset(iris_like(), "iris.csv")["id"]).json()
        url = f"/v1/jobs/{job['id']}"
        assert svc.client.get(url, headers=svc.a).status_code == 200     # caches the key
        engine, autocommit = get_engine(svc.settings.database_url), []

        def record(conn, cursor, statement, *_):
            if "FROM jobs" in statement:
                autocommit.append(conn.connection.dbapi_connection.autocommit)
        event.listen(engine, "before_cursor_execute", record)
        try:
            r = svc.client.get(url, headers=svc.a)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert r.status_code == 200 and r.json()["id"] == job["id"] and r.json()["created_at"].endswith("Z")
        assert autocommit == [True]
        with engine.connect() as conn:                                  # the pool's default is back
            assert conn.connection.dbapi_connection.autocommit is False
    finally:
        svc.client.close()
