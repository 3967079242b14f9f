"""Slow and greedy clients (issue 20) against the protocol `chainrule serve` and `chainrule api` run
(chainrule.guarded_http, with api.body_timeout): headers that do not arrive in time, a body that
stalls, and more connections from one address than allowed are each answered and closed."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import uvicorn

from chainrule.guarded_http import GuardedHttpProtocol
from e2e_support import LOOPBACK, free_port, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(service_factory):
    svc = service_factory(header_timeout_s=0.5, body_timeout_s=0.5, max_connections_per_address=3)
    GuardedHttpProtocol.configure(svc.settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(svc.client.app, host=LOOPBACK, port=port, http=GuardedHttpProtocol,
                                           loop="asyncio", log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, what="uvicorn")
    yield svc, port
    server.should_exit = True
    thread.join(10)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (recv times out after 10 s if it never does)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def _status_and_detail(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["detail"]


def test_headers_that_never_finish_are_408_and_closed(server):
    _, port = server
    with _connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")   # and then nothing
        started = time.monotonic()
        status, detail = _status_and_detail(_read_all(sock))
    assert status == 408 and "headers did not arrive within 0.5 s" in detail
    assert time.monotonic() - started < 8          # closed by the server, not by the socket's own timeout


def test_a_connection_that_sends_nothing_is_closed(server):
    _, port = server
    with _connect(port) as sock:
        status, _ = _status_and_detail(_read_all(sock))
    assert status == 408


def test_a_stalled_body_is_408_and_closed(server):
    svc, port = server
    with _connect(port) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + svc.key_a.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"dataset")
        status, detail = _status_and_detail(_read_all(sock))
    assert status == 408 and "request body stalled" in detail


def test_one_address_holds_at_most_its_connections(server):
    _, port = server
    held = [_connect(port) for _ in range(3)]
    try:
        for sock in held:                  # each in use: a request sent, the answer read, kept alive
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"200 OK" in sock.recv(65536)
        with _connect(port) as extra:
            status, detail = _status_and_detail(_read_all(extra))
        assert status == 429 and "more than 3 connections from one address" in detail
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: not GuardedHttpProtocol.open_by_address.get(LOOPBACK), 5, what="connections closed")
    with _connect(port) as sock:             # room again once they are closed
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"200 OK" in _read_all(sock)


def test_a_body_that_trickles_is_408_once_it_falls_below_the_minimum_rate(server):
    svc, port = server
    with _connect(port) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + svc.key_a.encode() + b"\r\nContent-Length: 1000\r\n\r\n")
        sock.settimeout(0.2)
        answer = b""
        for _ in range(100):                 # a byte every 0.1 s: never a 0.5 s stall, but 10 bytes/s
            try:
                sock.sendall(b" ")
                answer += sock.recv(65536)
                if answer:
                    break
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                pass
            time.sleep(0.1)
        sock.settimeout(10)
        answer += _read_all(sock)
    status, detail = _status_and_detail(answer)
    assert status == 408 and "bytes/s" in detail
