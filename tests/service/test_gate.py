"""What a request passes before its body is read (issue 8, point 5): the key first, a bound on JSON
bodies apart from uploads, and rate limits per key and per client address (429 with Retry-After),
counted in Redis when the broker is Redis, so that every API process shares them."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.main import create_app
from e2e_support import LOOPBACK, free_port, wait_for

from conftest import make_service


@pytest.fixture
def served(svc):
    """The service's app on a real uvicorn server, in a thread: (host, port)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(svc.client.app, host=LOOPBACK, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, what="uvicorn to start")
    yield LOOPBACK, port
    server.should_exit = True
    thread.join(10)


def _post_head(host: str, port: int, declared: int, headers: str, sent: int) -> tuple[str, float]:
    """POST /v1/jobs declaring `declared` bytes, send only `sent` of them, and read what comes back."""
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}"
                     f"Content-Length: {declared}\r\n\r\n".encode() + b"[" + b"1," * (sent // 2))
        started = time.monotonic()
        answer = conn.recv(4096).decode("latin-1")
        return answer, time.monotonic() - started


def test_a_request_without_a_key_is_401_before_its_body_is_read(served):
    """90 MB declared, 1 MB sent: the 401 comes back without the server waiting for the rest."""
    answer, waited = _post_head(*served, declared=90_000_000, headers="", sent=1_000_000)
    assert answer.startswith("HTTP/1.1 401") and "missing API key" in answer, answer[:300]
    assert waited < 5


def test_json_bodies_are_bounded_apart_from_uploads(svc, served):
    """A job spec is kilobytes: 20 MB of JSON is a 413 at once, though an upload may be 100 MB."""
    assert svc.settings.max_upload_bytes > 20_000_000 > svc.settings.max_json_bytes
    answer, _ = _post_head(*served, declared=20_000_000, headers=f"Authorization: Bearer {svc.key_a}\r\n",
                           sent=1_000_000)
    assert answer.startswith("HTTP/1.1 413") and f"the limit is {svc.settings.max_json_bytes}" in answer


def test_rate_limit_per_key_is_429_with_retry_after_and_spares_other_keys(service_factory):
    svc = service_factory(rate_limit_per_key="5/minute")
    codes = [svc.client.get("/v1/jobs", headers=svc.a).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    r = svc.client.get("/v1/jobs", headers=svc.a)
    assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 60 and "per key" in r.json()["detail"]
    assert svc.client.get("/v1/jobs", headers=svc.b).status_code == 200
    assert svc.client.get("/healthz").status_code == 200       # probes are never limited


def test_rate_limit_per_address_counts_every_request_from_it(service_factory):
    svc = service_factory(rate_limit_per_address="6/minute")
    codes = [svc.client.get("/v1/jobs", headers=headers).status_code
             for headers in (svc.a, svc.b, {}, {"Authorization": "Bearer cr_guess"}, svc.a, svc.b, svc.a)]
    assert codes == [200, 200, 401, 401, 200, 200, 429]


@pytest.mark.postgres
@pytest.mark.redis
def test_rate_limits_are_shared_through_redis_by_every_api_process(tmp_path, pg_server, redis_server):
    """Two app instances (two API processes) on one Redis broker share one count."""
    svc = make_service(tmp_path, database_url=pg_server.create_database(), broker_url=redis_server.new_url(),
                       rate_limit_per_key="5/minute")
    other = TestClient(create_app(svc.settings))
    try:
        codes = [client.get("/v1/jobs", headers=svc.a).status_code
                 for client in (svc.client, other, svc.client, other, svc.client, other)]
        assert codes == [200] * 5 + [429]
    finally:
        other.close()
        svc.client.close()


def test_an_unreachable_rate_limit_store_lets_requests_through(service_factory):
    # the limiter's Redis is down: it fails open (Redis being down is a 503 where it matters, at submit)
    svc = service_factory(broker_url="redis://127.0.0.1:1/0", rate_limit_per_key="1/minute")
    assert [svc.client.get("/v1/jobs", headers=svc.a).status_code for _ in range(3)] == [200] * 3
