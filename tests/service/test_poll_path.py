"""The status poll's path through the app: no thread hop on SQLite (a hop costs more than the read),
no transaction on PostgreSQL."""
from __future__ import annotations

import anyio.to_thread
import pytest

from conftest import iris_like, make_service


def test_status_poll_on_sqlite_runs_on_the_event_loop(svc, iris, monkeypatch):
    job = svc.submit(iris["id"]).json()
    url = f"/v1/jobs/{job['id']}"
    assert svc.client.get(url, headers=svc.a).status_code == 200     # caches key a
    assert svc.client.get(url, headers=svc.b).status_code == 404     # another key's job, on the same path

    hops = []
    real = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):
        hops.append(getattr(func, "__qualname__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    r = svc.client.get(url, headers=svc.a)
    assert r.status_code == 200 and r.json()["id"] == job["id"] and r.json()["status"] == "queued"
    assert hops == []


@pytest.mark.postgres
def test_status_poll_on_postgres_runs_outside_a_transaction(tmp_path, pg_server):
    """One SELECT in autocommit: no BEGIN before it and no ROLLBACK after it (two round trips)."""
    from sqlalchemy import event

    from chainrule.db import get_engine

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
