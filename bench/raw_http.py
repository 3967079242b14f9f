"""A lean HTTP/1.1 load client for the service benches: asyncio streams, no HTTP library.

An httpx client spends about a millisecond of CPU a request. In bench/overload.py 500 of them and the
/healthz probe shared one event loop on the same two cores as the API, so the probe measured the load
generator's own backlog as much as the server. This client costs a few microseconds a request, and
`probe` times /healthz from a process of its own, as an orchestrator's liveness probe would.

    python -m bench.raw_http probe --url http://127.0.0.1:8000/healthz --every 0.05
        # until SIGTERM (or --for seconds): one line of JSON, every probe's latency in seconds

Answers are read as HTTP/1.1 with Content-Length (every answer of our API but the event streams).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import sys
import time
from collections import Counter
from urllib.parse import urlsplit


def request_bytes(url: str, headers: dict[str, str] | None = None, *, close: bool = True) -> tuple[str, int, bytes]:
    """(host, port, the GET request's bytes) of url."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {path or '/'} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Connection: {'close' if close else 'keep-alive'}")
    return parts.hostname, parts.port, ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


async def get_once(host: str, port: int, request: bytes, timeout: float) -> tuple[int | str, bytes, float]:
    """One request on a connection of its own: (status or the failure's name, body, seconds)."""
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status, body = await read_answer(reader)
    except TimeoutError:
        status, body = "client timeout", b""
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        status, body = type(e).__name__, b""
    finally:
        if writer is not None:
            writer.close()
    return status, body, time.perf_counter() - started


async def probe(url: str, every: float, seconds: float | None, timeout: float) -> list[float]:
    """GET url on one kept-alive connection every `every` s, for `seconds` or until SIGTERM: each
    answer's latency."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    host, port, request = request_bytes(url, close=False)
    reader, writer = await asyncio.open_connection(host, port)
    latencies: list[float] = []
    end = time.perf_counter() + (seconds if seconds is not None else float("inf"))
    try:
        while time.perf_counter() < end and not stop.is_set():
            started = time.perf_counter()
            writer.write(request)
            async with asyncio.timeout(timeout):
                status, _ = await read_answer(reader)
            if status != 200:
                raise RuntimeError(f"{url} answered {status}")
            latencies.append(time.perf_counter() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        writer.close()
    return latencies


async def constant_rate(url: str, headers: dict[str, str], rate: float, seconds: float, connections: int,
                        timeout: float = 5.0) -> dict:
    """GETs of url at a constant `rate` a second for `seconds` (open loop: the next request's time
    does not wait for the last answer), on `connections` kept-alive connections. Each latency runs
    from the request's scheduled time, so a request that waited for a free connection counts that
    wait (wrk2's correction for coordinated omission). Returns the latencies (s), the statuses, the
    answers a second achieved."""
    host, port, request = request_bytes(url, headers, close=False)
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    statuses: Counter = Counter()

    async def one(scheduled: float) -> None:
        reader, writer = await pool.get()
        try:
            writer.write(request)
            async with asyncio.timeout(timeout):
                status, _ = await read_answer(reader)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
            statuses["client timeout" if isinstance(e, TimeoutError) else type(e).__name__] += 1
            writer.close()
            pool.put_nowait(await asyncio.open_connection(host, port))
            return
        statuses[status] += 1
        latencies.append(time.perf_counter() - scheduled)
        pool.put_nowait((reader, writer))

    tasks = []
    # No garbage collection while sending: a latency runs from its scheduled time, so a pause of this
    # process counts as the server's. A full collection of the growing task list took ~100 ms at
    # 1,000 req/s and was the whole p99 (wrk, in C, has no such pause).
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        for i in range(int(rate * seconds)):
            scheduled = started + i / rate
            if (delay := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
        took = time.perf_counter() - started
    finally:
        gc.enable()
    while not pool.empty():
        pool.get_nowait()[1].close()
    return {"latencies": latencies, "statuses": dict(statuses), "achieved_rps": len(latencies) / took}


def run(coro):
    """asyncio.run on uvloop when it is installed (uvicorn[standard] brings it): the load generator
    shares the cores with the server it measures, so the cheaper loop leaves the server more."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="time a URL from a process of its own")
    parser.add_argument("mode", choices=["probe"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--for", dest="seconds", type=float, help="seconds (default: until SIGTERM)")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    latencies = run(probe(args.url, args.every, args.seconds, args.timeout))
    json.dump(latencies, sys.stdout)


if __name__ == "__main__":
    main()
