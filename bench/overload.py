"""Overload: a burst of concurrent list requests on PostgreSQL + Redis, as issue 20 measured it.

    python bench/overload.py                       # 500 at once, the default settings, 60 s to settle
    python bench/overload.py --requests 500 --settle 20 --set max_connections_per_address=1000

The real service as subprocesses on 127.0.0.1 (tests/e2e_support.py): a throw-away PostgreSQL and
redis-server, `chainrule api` with its default settings (or those --set gives) and no worker; one
key with --jobs queued jobs of a 40-layer spec (a list item used to carry it whole). Then
--requests clients at once, each on its own connection, send GET /v1/jobs?limit=100 with a
--client-timeout; meanwhile /healthz is timed every 50 ms on a connection of its own. Printed:
the count of each answer (200 / 429 / 503 / other / client timeout), the slowest answer, the
503s' bodies ("busy" vs "unavailable"), /healthz's worst and median during the burst, and the API's
resident memory (VmRSS) before, right after, and --settle seconds after the burst.

Targets (issue 20): 0 client timeouts, every answer within 2 s and one of 200 / 429 / 503, /healthz
under 100 ms throughout, RSS back within 50 MB of where it started. Nothing here asserts a timing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402

from e2e_support import PostgresServer, RedisServer, Stack, blobs_csv  # noqa: E402

LAYERS = [{"type": "linear", "out_features": 16}, {"type": "relu"}] * 20 + [{"type": "linear", "out_features": 3}]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def burst(url: str, key: str, n: int, timeout: float) -> tuple[Counter, float, Counter, list[float]]:
    """n list requests at once, each on its own connection; /healthz timed beside them."""
    statuses, details, health = Counter(), Counter(), []
    slowest = 0.0
    done = asyncio.Event()

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal slowest
        start = time.perf_counter()
        try:
            r = await client.get(f"{url}/v1/jobs?limit=100", headers={"Authorization": f"Bearer {key}"})
            statuses[r.status_code] += 1
            if r.status_code >= 400:
                details[r.json().get("detail", "")[:60]] += 1
        except httpx.TimeoutException:
            statuses["client timeout"] += 1
        except httpx.TransportError as e:
            statuses[type(e).__name__] += 1
        slowest = max(slowest, time.perf_counter() - start)

    async def probe() -> None:
        async with httpx.AsyncClient(timeout=timeout) as client:
            while not done.is_set():
                start = time.perf_counter()
                await client.get(f"{url}/healthz")
                health.append(time.perf_counter() - start)
                await asyncio.sleep(0.05)

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        prober = asyncio.create_task(probe())
        await asyncio.sleep(0.2)
        await asyncio.gather(*(one(client) for _ in range(n)))
        done.set()
        await prober
    return statuses, slowest, details, health


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after the burst to read RSS again")
    parser.add_argument("--client-timeout", type=float, default=60.0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a setting for the API")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    settings = dict(s.split("=", 1) for s in args.set)
    settings.setdefault("max_concurrent_jobs", str(args.jobs + 1))
    pg, redis = PostgresServer().start(), RedisServer().start()
    stack = None
    try:
        stack = Stack(Path(tempfile.mkdtemp(prefix="overload-")), database_url=pg.create_database(),
                      broker_url=redis.new_url(), **settings)
        stack.create_key_in_process()
        api = stack.start_api()
        stack.wait_api()
        dataset = stack.upload_csv(blobs_csv(), "blobs")
        for _ in range(args.jobs):
            stack.submit(dataset["id"], model={"layers": LAYERS})
        page = stack.http.get("/v1/jobs?limit=100")
        full = stack.http.get("/v1/jobs?limit=100&fields=request")
        for _ in range(20):                                   # warm: imports, caches, the pool
            stack.http.get("/v1/jobs?limit=100")
        before = rss_mb(api.pid)
        statuses, slowest, details, health = asyncio.run(burst(stack.api_url, stack.key, args.requests,
                                                               args.client_timeout))
        after = rss_mb(api.pid)
        time.sleep(args.settle)
        settled = rss_mb(api.pid)
        result = {"requests": args.requests, "settings": settings, "statuses": {str(k): v for k, v in statuses.items()},
                  "slowest_answer_s": round(slowest, 3), "refusals": dict(details),
                  "healthz_ms": {"max": round(1000 * max(health), 1), "median": round(1000 * statistics.median(health), 1),
                                 "n": len(health)},
                  "rss_mb": {"before": round(before, 1), "after": round(after, 1), f"after_{args.settle:g}s": round(settled, 1)},
                  "list_bytes": {"summaries": len(page.content), "with_request": len(full.content), "jobs": args.jobs}}
    finally:
        if stack is not None:
            stack.close()
        redis.stop()
        pg.stop()
    print(json.dumps(result, indent=2))
    print(f"targets: 0 client timeouts, slowest answer <= 2 s, only 200/429/503, /healthz max < 100 ms, "
          f"RSS within 50 MB of {result['rss_mb']['before']} MB after settling")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
