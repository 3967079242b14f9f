"""bench/raw_http.py, the benches' lean load client, against a real server: its counts, statuses and
latencies must be the server's, or the overload and poll figures mean nothing."""
from __future__ import annotations

import asyncio
import gc
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.raw_http import constant_rate, get_once, request_bytes

ROOT = Path(__file__).resolve().parent.parent


async def serve(handler) -> tuple[asyncio.AbstractServer, int]:
    """A keep-alive HTTP/1.1 server on a free loopback port; handler(path, headers) -> (status, body)."""
    async def connection(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *fields = head.decode().split("\r\n")
                headers = dict(f.split(": ", 1) for f in fields if f)
                status, body = await handler(line.split()[1], headers)
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                if headers.get("Connection") == "close":
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()
    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_get_once_reads_status_and_body_and_sends_the_headers():
    async def main():
        async def handler(path, headers):
            return (200, json.dumps({"path": path, "auth": headers.get("Authorization")}).encode())
        server, port = await serve(handler)
        async with server:
            host, port_, request = request_bytes(f"http://127.0.0.1:{port}/v1/jobs?limit=100",
                                                 {"Authorization": "Bearer k"})
            return await get_once(host, port_, request, timeout=5)
    status, body, seconds = asyncio.run(main())
    assert status == 200 and json.loads(body) == {"path": "/v1/jobs?limit=100", "auth": "Bearer k"}
    assert 0 < seconds < 30


def test_get_once_names_a_timeout_and_a_refused_connection():
    async def main():
        async def handler(path, headers):
            await asyncio.sleep(10)
            return 200, b""
        server, port = await serve(handler)
        host, port, request = request_bytes(f"http://127.0.0.1:{port}/")
        async with server:
            slow = await get_once(host, port, request, timeout=0.2)
        refused = await get_once(host, port, request, timeout=2)     # the server is closed
        return slow, refused
    slow, refused = asyncio.run(main())
    assert slow[0] == "client timeout" and 0.2 <= slow[2] < 30
    assert refused[0] == "ConnectionRefusedError"


def test_constant_rate_sends_at_the_rate_and_times_from_the_schedule():
    """200/s for 0.5 s: 100 answers, spread over the half second (open loop); a server that holds
    every answer 50 ms shows latencies of at least 50 ms, and with 2 connections (at most 40 answers
    a second) the waits for a free connection count, so latencies grow across the run."""
    async def main(delay, connections, seconds):
        sent: list[float] = []

        async def handler(path, headers):
            sent.append(time.perf_counter())
            collecting.append(gc.isenabled())
            await asyncio.sleep(delay)
            return 200 if path == "/ok" else 503, b"{}"
        server, port = await serve(handler)
        async with server:
            got = await constant_rate(f"http://127.0.0.1:{port}/ok", {}, 200, seconds, connections)
        return got, sent
    collecting: list[bool] = []
    got, sent = asyncio.run(main(0.0, 8, 0.5))
    assert got["statuses"] == {200: 100} and len(got["latencies"]) == 100
    assert collecting == [False] * 100 and gc.isenabled()    # no collector pause while it sends; on again after
    assert 0.45 <= sent[-1] - sent[0] < 3               # spread over the half second, not sent at once
    assert 30 <= got["achieved_rps"] <= 205               # never faster than the rate asked
    slow, _ = asyncio.run(main(0.05, 2, 0.25))
    assert slow["statuses"] == {200: 50} and min(slow["latencies"]) >= 0.05
    assert max(slow["latencies"]) > 0.6                  # 50 answers at 40/s end ~1.25 s in: the last waited ~1 s


def test_probe_times_healthz_until_sigterm():
    async def start():
        async def handler(path, headers):
            return 200, b"ok"
        return await serve(handler)

    loop = asyncio.new_event_loop()
    try:
        server, port = loop.run_until_complete(start())
        prober = subprocess.Popen([sys.executable, "-m", "bench.raw_http", "probe", "--url",
                                   f"http://127.0.0.1:{port}/healthz", "--every", "0.02"],
                                  cwd=ROOT, stdout=subprocess.PIPE, text=True)
        loop.run_until_complete(asyncio.sleep(1.0))
        prober.send_signal(signal.SIGTERM)
        out = loop.run_until_complete(loop.run_in_executor(None, lambda: prober.communicate(timeout=30)))[0]
        server.close()
    finally:
        loop.close()
    latencies = json.loads(out)
    assert prober.returncode == 0 and len(latencies) >= 5 and all(0 < s < 30 for s in latencies)
