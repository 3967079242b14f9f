"""Overload: a burst of concurrent list requests on PostgreSQL + Redis, as issue 20 measured it.

    python bench/overload.py                       # 500 at once, the default settings, 60 s to settle
    python bench/overload.py --requests 500 --settle 20 --set max_connections_per_address=1000

The real service as subprocesses on 127.0.0.1 (tests/e2e_support.py): a throw-away PostgreSQL and
redis-server, `chainrule api` with its default settings (or those --set gives) and no worker; one
key with --jobs queued jobs of a 40-layer spec (a list item used to carry it whole). Then
--requests clients at once, each on its own connection, send GET /v1/jobs?limit=100 with a
--client-timeout (bench/raw_http.py: a few microseconds of client CPU a request; 500 httpx clients
on the bench's own event loop cost seconds of the same two cores and delayed their own timings);
meanwhile a process of its own times /healthz every 50 ms on a kept-alive connection. Printed:
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
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from e2e_support import PostgresServer, RedisServer, Stack, blobs_csv  # noqa: E402

from bench.raw_http import get_once, request_bytes, run  # noqa: E402

LAYERS = [{"type": "linear", "out_features": 16}, {"type": "relu"}] * 20 + [{"type": "linear", "out_features": 3}]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def burst(url: str, key: str, n: int, timeout: float) -> tuple[Counter, float, Counter]:
    """n list requests at once, each on its own connection (bench.raw_http: microseconds of client
    CPU a request, so the figures are the server's)."""
    host, port, request = request_bytes(f"{url}/v1/jobs?limit=100", {"Authorization": f"Bearer {key}"})
    answers = await asyncio.gather(*(get_once(host, port, request, timeout) for _ in range(n)))
    statuses, details = Counter(), Counter()
    for status, body, _ in answers:
        statuses[status] += 1
        if isinstance(status, int) and status >= 400:
            details[json.loads(body).get("detail", "")[:60]] += 1
    return statuses, max(seconds for _, _, seconds in answers), details


def probed_burst(url: str, key: str, n: int, timeout: float) -> tuple[Counter, float, Counter, list[float]]:
    """The burst, with /healthz timed every 50 ms by a process of its own from before it to after."""
    prober = subprocess.Popen([sys.executable, "-m", "bench.raw_http", "probe", "--url", f"{url}/healthz",
                               "--every", "0.05"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)                                  # its interpreter up and probing
        statuses, slowest, details = run(burst(url, key, n, timeout))
        time.sleep(0.2)
    finally:
        prober.send_signal(signal.SIGTERM)
        out, _ = prober.communicate(timeout=30)
    return statuses, slowest, details, json.loads(out)


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
        statuses, slowest, details, health = probed_burst(stack.api_url, stack.key, args.requests,
                                                               args.client_timeout)
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
