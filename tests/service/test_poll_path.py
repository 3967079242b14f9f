"""The status poll's path through the app: no thread hop on SQLite (a hop costs more than the read)."""
from __future__ import annotations

import anyio.to_thread


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
