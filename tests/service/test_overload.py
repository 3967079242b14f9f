"""Load shedding (issue 20): a flood of requests is answered at once, 200, 429 or 503 "busy" with
Retry-After, never left hanging; liveness answers throughout; lists carry summaries."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from conftest import iris_like

ANSWERED = {200, 429, 503}


async def _burst(app, n: int, path: str, headers: dict, probe: str | None = None) -> tuple[list, list]:
    """n requests of `path` at once on the app's own event loop (sync routes run in its threadpool),
    plus, while they run, probes of `probe`; every answer must come within 30 s."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        async def probes():
            answers = []
            for _ in range(5):
                answers.append(await client.get(probe))
                await asyncio.sleep(0)
            return answers
        burst = asyncio.gather(*(client.get(path, headers=headers) for _ in range(n)))
        side = probes() if probe else asyncio.sleep(0, result=[])
        return tuple(await asyncio.wait_for(asyncio.gather(burst, side), timeout=30))


def _statuses(responses) -> set[int]:
    return {r.status_code for r in responses}


def _assert_busy(responses) -> None:
    busy = [r for r in responses if r.status_code == 503]
    assert busy, "the burst saturated nothing: no 503"
    for r in busy:
        assert "busy" in r.json()["detail"] and "unavailable" not in r.json()["detail"], r.text
        assert int(r.headers["retry-after"]) >= 1


@pytest.mark.postgres
def test_a_saturated_pool_answers_503_busy_at_once_not_a_hang(service_factory, pg_server):
    svc = service_factory(database_url=pg_server.create_database(), db_pool_size=2, db_max_overflow=0,
                          db_pool_timeout_s=0.05, max_requests_in_flight=1000, rate_limit_per_key="",
                          rate_limit_per_address="")
    ds = svc.dataset(iris_like(), "iris.csv")
    for _ in range(3):
        assert svc.submit(ds["id"]).status_code == 202
    listed, health = asyncio.run(_burst(svc.client.app, 120, "/v1/jobs?limit=100", svc.a, probe="/healthz"))
    assert _statuses(listed) <= ANSWERED and 200 in _statuses(listed), _statuses(listed)
    _assert_busy(listed)
    assert all("every database connection is in use" in r.json()["detail"] for r in listed if r.status_code == 503)
    assert [r.status_code for r in health] == [200] * 5
    assert svc.client.get("/v1/jobs", headers=svc.a).json()["total"] == 3     # and it recovers


def test_past_the_requests_in_flight_a_request_is_503_busy_and_probes_still_answer(service_factory):
    svc = service_factory(max_requests_in_flight=2, rate_limit_per_key="", rate_limit_per_address="")
    ds = svc.dataset(iris_like(), "iris.csv")
    assert svc.submit(ds["id"]).status_code == 202
    listed, health = asyncio.run(_burst(svc.client.app, 60, "/v1/jobs", svc.a, probe="/healthz"))
    assert _statuses(listed) == {200, 503}
    _assert_busy(listed)
    assert all("requests in flight" in r.json()["detail"] for r in listed if r.status_code == 503)
    assert [r.status_code for r in health] == [200] * 5
    assert svc.client.get("/v1/jobs", headers=svc.a).status_code == 200       # nothing leaked a slot


def test_lists_carry_summaries_and_the_full_request_only_when_asked(svc, iris):
    layers = [{"type": "linear", "out_features": 8}, {"type": "relu"}] * 40 + [{"type": "linear", "out_features": 3}]
    for _ in range(4):
        assert svc.submit(iris["id"], model={"layers": layers}).status_code == 202
    page = svc.client.get("/v1/jobs?limit=100", headers=svc.a)
    items = page.json()["items"]
    assert len(items) == 4 and all(j["request"] is None and j["init_report"] is None for j in items)
    assert all(j["progress"]["epochs"] == 2 and j["status"] == "queued" for j in items)
    full = svc.client.get("/v1/jobs?limit=100&fields=request", headers=svc.a)
    assert [len(j["request"]["model"]["layers"]) for j in full.json()["items"]] == [81] * 4
    assert len(page.content) * 4 < len(full.content)        # the spec is most of a job's bytes
    one = svc.client.get(f"/v1/jobs/{items[0]['id']}", headers=svc.a).json()
    assert len(one["request"]["model"]["layers"]) == 81
    bad = svc.client.get("/v1/jobs?fields=everything", headers=svc.a)
    assert bad.status_code == 422 and "request" in bad.text



@pytest.mark.postgres
@pytest.mark.redis
def test_a_keys_event_streams_are_counted_across_api_processes(tmp_path, pg_server, redis_server):
    """Two app instances (two API processes) on one Redis: the per-key cap holds across both."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from conftest import make_service

    svc = make_service(tmp_path, database_url=pg_server.create_database(), broker_url=redis_server.new_url(),
                       max_event_streams_per_key=1, events_poll_interval_s=0.05)
    other = TestClient(create_app(svc.settings))
    try:
        job = svc.submit(svc.dataset(iris_like(), "iris.csv")["id"]).json()
        url = f"/v1/jobs/{job['id']}/events"
        with svc.client.stream("GET", url, headers=svc.a) as first:
            assert first.status_code == 200
            second = other.get(url, headers=svc.a)
            assert second.status_code == 429 and "max_event_streams_per_key" in second.json()["detail"]
            svc.client.post(f"/v1/jobs/{job['id']}/cancel", headers=svc.a)
            assert any("cancelled" in line for line in first.iter_lines())
        with other.stream("GET", url, headers=svc.a) as again:      # the lease was given back
            assert again.status_code == 200
    finally:
        other.close()
        svc.client.close()
