"""Service latency: submit -> running, a 1-epoch job end to end, status polls under load, and the
API's memory across rejected uploads.

    python bench/service_latency.py                          # embedded broker and Redis, SQLite
    python bench/service_latency.py --broker redis --db postgres --json latency.json
    python bench/service_latency.py --broker redis --db postgres --api-workers 2   # one API process a core
    python bench/service_latency.py --quick                  # a few jobs, 3 s of load: a smoke run

The real service, as subprocesses on 127.0.0.1 only, started by the same helpers the
end-to-end tests use (tests/e2e_support.py, so pytest must be importable): `chainrule keys
create` (which also runs the migrations), `chainrule api` and one `chainrule worker`, waited
for until the worker is ready (warm). With `--broker redis` it starts its own redis-server on
a free loopback port (`--save '' --appendonly no`); `--db postgres` starts a throw-away
PostgreSQL the same way, else the database is the embedded SQLite file. The service runs with
its default settings (no test timings), but for rate limits set out of reach (1,000,000/second per
key and per address: the limiter runs and is counted, it never refuses the load generator). The
data set is generated: 600 rows of 3 Gaussian blobs in 4 features (tests/e2e_support.blobs_csv), uploaded as CSV.

Measured, per broker:
  1. submit -> running: for each of `--jobs` 1-epoch jobs, one at a time on an idle warm worker,
     the time from POST /v1/jobs returning to the first GET /v1/jobs/{id} (polled every 5 ms)
     that is not `queued`, and the server's own `started_at - created_at` (which also holds the
     submit's commit and enqueue); median and p90.
  2. a 1-epoch job end to end: POST sent -> GET says `succeeded` (polled every 10 ms), median
     over `--e2e-jobs` jobs, beside the server's `finished_at - created_at` and the training
     loop's own time (result.total_time_s).
  3. GET /v1/jobs/{id} under `--connections` concurrent keep-alive clients for `--duration` s:
     requests/s and p99 latency (after 2 s of the same load, discarded), with wrk (`-t2 --latency`;
     installed with apt-get when missing and we are root) or else an asyncio httpx load
     generator; the table says which. Once per
     entry of `--api-workers` (default 1 and one per core): 1 is the stack's `chainrule api`, N > 1
     a second `chainrule api --workers N` on the same database. The load generator shares the
     machine's cores with the API (and so does anything else running: the load average is
     printed), so the figures are a floor.
  4. the API's resident memory (VmRSS of the `chainrule api` process) after one rejected upload
     (imports and caches), and after `--rejected-uploads` more (default 1,000) of a CSV of
     `--rejected-upload-mb` MB whose last line is not a number (the whole file is parsed, then
     refused with a 422); with its peak (VmHWM).
Targets are printed beside the figures; this is a benchmark, nothing here asserts a timing.
Every process it started is stopped on the way out, also after Ctrl-C or an error.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from e2e_support import (  # noqa: E402
    FAST_TIMINGS,
    LOOPBACK,
    PostgresServer,
    RedisServer,
    Stack,
    blobs_csv,
    free_port,
    stop_process,
    wait_for,
)

from bench.raw_http import constant_rate, run  # noqa: E402

TARGETS = {"submit_to_running_embedded_s": 0.5, "submit_to_running_redis_s": 0.1,
           "poll_rps": 1000.0, "poll_p99_ms": 50.0}
TINY_JOB = {"model": {"layers": [{"type": "linear", "out_features": 16}, {"type": "relu"},
                                 {"type": "linear", "out_features": 3}]},
            "epochs": 1, "batch_size": 64, "validation_split": 0.25, "seed": 0, "device": "cpu"}
FINAL = ("succeeded", "failed", "cancelled")
WARMUP_S = 2.0   # seconds of the same load before each measured one
RATE_CONNECTIONS = 32   # the constant-rate polls' connections (under max_connections_per_address, 64)
OUT_OF_REACH = "1000000/second"   # rate limits the load generator never reaches


class Interrupted(Exception):
    """SIGTERM, turned into an exception so the `finally` blocks stop what we started."""


def _on_sigterm(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "median": statistics.median(values) if values else float("nan"),
            "p90": percentile(values, 0.9), "min": min(values, default=float("nan")),
            "max": max(values, default=float("nan")), "samples": [round(v, 6) for v in values]}


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# ----------------------------------------------------------------------------- the service
def start_stack(root: Path, broker: str, db: str, servers: dict) -> Stack:
    database_url = broker_url = None
    if db == "postgres":
        if "pg" not in servers:
            servers["pg"] = PostgresServer().start()
        database_url = servers["pg"].create_database()
    if broker == "redis":
        if "redis" not in servers:
            servers["redis"] = RedisServer().start()
        broker_url = servers["redis"].new_url()
    stack = Stack(root / broker, database_url=database_url, broker_url=broker_url,
                  rate_limit_per_key=OUT_OF_REACH, rate_limit_per_address=OUT_OF_REACH)
    for name in FAST_TIMINGS:   # the tests' short liveness timings: measure the defaults instead
        stack.env.pop(name, None)
    servers.setdefault("stacks", []).append(stack)
    stack.up(workers=1)
    return stack


def submit(stack: Stack, dataset_id: str) -> tuple[dict, float, float]:
    """POST a tiny job; returns the job, and monotonic times just before sending and after the reply."""
    body = {"dataset_id": dataset_id, "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01},
            **TINY_JOB}
    sent = time.monotonic()
    r = stack.http.post("/v1/jobs", json=body)
    returned = time.monotonic()
    if r.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs answered {r.status_code}: {r.text[:500]}")
    return r.json(), sent, returned


def poll_until(stack: Stack, job_id: str, done, interval: float, timeout: float) -> tuple[dict, float]:
    """GET the job every `interval` s until done(job); returns it and the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        r = stack.http.get(f"/v1/jobs/{job_id}")
        now = time.monotonic()
        if r.status_code != 200:
            raise RuntimeError(f"GET /v1/jobs/{job_id} answered {r.status_code}: {r.text[:500]}")
        job = r.json()
        if done(job):
            return job, now
        if now > deadline:
            stack.check_alive("api")
            stack.check_alive("worker")
            raise RuntimeError(f"job {job_id} still {job['status']} after {timeout} s:\n{stack.dump_logs()}")
        time.sleep(interval)


def measure_submit_to_running(stack: Stack, dataset_id: str, n: int) -> dict[str, Any]:
    client, server, post = [], [], []
    missed = 0
    for _ in range(n):
        job, sent, returned = submit(stack, dataset_id)
        seen, at = poll_until(stack, job["id"], lambda j: j["status"] != "queued", 0.005, 60)
        if seen["status"] != "running":   # finished between two polls: `at` is an upper bound
            missed += 1
        client.append(at - returned)
        post.append(returned - sent)
        final, _ = poll_until(stack, job["id"], lambda j: j["status"] in FINAL, 0.02, 120)
        if final["status"] != "succeeded":
            raise RuntimeError(f"job {job['id']} ended {final['status']}: {final.get('error')}")
        server.append(_ts(final["started_at"]) - _ts(final["created_at"]))
    return {"client": summary(client), "server": summary(server), "post": summary(post),
            "finished_before_seen_running": missed}


def measure_end_to_end(stack: Stack, dataset_id: str, n: int) -> dict[str, Any]:
    client, server, fit = [], [], []
    for _ in range(n):
        job, sent, _ = submit(stack, dataset_id)
        final, at = poll_until(stack, job["id"], lambda j: j["status"] in FINAL, 0.01, 120)
        if final["status"] != "succeeded":
            raise RuntimeError(f"job {job['id']} ended {final['status']}: {final.get('error')}")
        client.append(at - sent)
        server.append(_ts(final["finished_at"]) - _ts(final["created_at"]))
        fit.append(float((final.get("result") or {}).get("total_time_s", float("nan"))))
    return {"client": summary(client), "server": summary(server), "fit": summary(fit)}


# ----------------------------------------------------------------------------- memory
def _process_mb(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def rejected_csv(megabytes: float) -> bytes:
    """A CSV of about `megabytes` MB, 8 features, whose last line's feature is not a number."""
    row = "0.123456,-1.234567,2.345678,0.345678,-0.456789,1.567890,0.678901,-2.789012,1\n"
    rows = max(1, int(megabytes * 2**20 / len(row)))
    return ("a,b,c,d,e,f,g,h,t\n" + row * rows + "1,2,3,4,5,6,7,x,1\n").encode()


def measure_rejected_uploads(stack: Stack, n: int, megabytes: float) -> dict[str, Any]:
    content, pid = rejected_csv(megabytes), stack.procs["api"].pid

    def upload() -> None:
        r = stack.http.post("/v1/datasets", files={"file": ("rejected.csv", content, "text/csv")})
        if r.status_code != 422:
            raise RuntimeError(f"a rejected upload answered {r.status_code}: {r.text[:300]}")
    upload()
    before = _process_mb(pid)
    t0 = time.monotonic()
    for _ in range(n):
        upload()
    after = _process_mb(pid)
    return {"uploads": n, "file_mb": round(len(content) / 2**20, 2), "seconds": round(time.monotonic() - t0, 1),
            "rss_before_mb": round(before["VmRSS"], 1), "rss_after_mb": round(after["VmRSS"], 1),
            "peak_mb": round(after["VmHWM"], 1)}


# ----------------------------------------------------------------------------- load
def ensure_wrk() -> str | None:
    wrk = shutil.which("wrk")
    if wrk or os.geteuid() != 0 or not shutil.which("apt-get"):
        return wrk
    print("wrk is missing; installing it with apt-get (Debian package wrk)", flush=True)
    for args in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "wrk"]):
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if shutil.which("wrk"):
            break
    return shutil.which("wrk")


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _WRK_UNITS[unit]


def load_wrk(wrk: str, url: str, key: str, connections: int, duration: float) -> dict[str, Any]:
    cmd = [wrk, "-t2", f"-c{connections}", f"-d{int(round(duration))}s", "--latency", "--timeout", "5s",
           "-H", f"Authorization: Bearer {key}", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and p99):
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"tool": f"wrk -t2 -c{connections} -d{int(round(duration))}s --latency", "rps": float(rps.group(1)),
            "p50_ms": _wrk_ms(p50.group(1)) if p50 else None, "p99_ms": _wrk_ms(p99.group(1)),
            "requests": int(total.group(1)) if total else None,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else None}


async def _load_httpx(url: str, key: str, connections: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    bad = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=5) as client:
        stop_at = time.monotonic() + duration

        async def one_client():
            nonlocal bad
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                r = await client.get(url)
                latencies.append(time.perf_counter() - t0)
                bad += r.status_code != 200
        t0 = time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(connections)))
        took = time.monotonic() - t0
    return {"tool": f"asyncio httpx, {connections} concurrent clients, {duration:g} s",
            "rps": len(latencies) / took, "p50_ms": percentile(latencies, 0.5) * 1e3,
            "p99_ms": percentile(latencies, 0.99) * 1e3, "requests": len(latencies), "non_2xx": bad,
            "socket_errors": None}


def measure_polls(stack: Stack, base_url: str, job_id: str, tool: str, connections: int,
                  duration: float, rate: float = 0.0) -> dict[str, Any]:
    url = f"{base_url}/v1/jobs/{job_id}"
    r = stack.http.get(url)
    if r.status_code != 200:
        raise RuntimeError(f"GET {url} answered {r.status_code}: {r.text[:300]}")
    wrk = ensure_wrk() if tool in ("auto", "wrk") else None
    if tool == "wrk" and wrk is None:
        raise RuntimeError("--load wrk: wrk is not installed and could not be installed")
    for seconds in (WARMUP_S, duration):   # the first round warms the API's caches and pools; discarded
        if wrk:
            out = load_wrk(wrk, url, stack.key, connections, seconds)
        else:
            out = asyncio.run(_load_httpx(url, stack.key, connections, seconds))
    if rate:
        out["at_rate"] = measure_rate(url, stack.key, rate, duration)
    return out


def measure_rate(url: str, key: str, rate: float, duration: float) -> dict[str, Any]:
    """The issue's target as it reads, "p99 at >= 1000 req/s": polls sent at a constant rate (open
    loop, bench.raw_http.constant_rate), latency from each poll's scheduled time. A closed loop of C
    clients cannot show it: its latency is C / throughput by Little's law (50 clients at 1000 req/s
    wait 50 ms on average), whatever the server does."""
    headers = {"Authorization": f"Bearer {key}"}
    for seconds in (WARMUP_S, duration):
        got = run(constant_rate(url, headers, rate, seconds, RATE_CONNECTIONS))
    lat = got["latencies"]
    return {"tool": f"bench/raw_http.py constant_rate, {rate:g} req/s on {RATE_CONNECTIONS} kept-alive "
                    f"connections, {duration:g} s", "rate": rate, "rps": got["achieved_rps"],
            "p50_ms": percentile(lat, 0.5) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3,
            "max_ms": max(lat) * 1e3, "requests": len(lat),
            "non_2xx": sum(n for status, n in got["statuses"].items() if status != 200)}


# ----------------------------------------------------------------------------- one broker
def run_broker(root: Path, broker: str, args, servers: dict) -> dict[str, Any]:
    print(f"[{broker}] starting the API and a worker ({args.db}) ...", flush=True)
    t0 = time.monotonic()
    stack = start_stack(root, broker, args.db, servers)
    ds = stack.upload_csv(blobs_csv(n=600, seed=0, features=4))
    print(f"[{broker}] up in {time.monotonic() - t0:.1f} s: {stack.api_url}, broker "
          f"{stack.env.get('CHAINRULE_BROKER_URL', 'filesystem (embedded)')}; warming up", flush=True)
    measure_end_to_end(stack, ds["id"], 2)   # first jobs pay imports and first-touch costs
    out: dict[str, Any] = {"broker": broker, "db": args.db}
    print(f"[{broker}] submit -> running, {args.jobs} jobs", flush=True)
    out["submit_to_running"] = measure_submit_to_running(stack, ds["id"], args.jobs)
    print(f"[{broker}] 1-epoch job end to end, {args.e2e_jobs} jobs", flush=True)
    out["end_to_end"] = measure_end_to_end(stack, ds["id"], args.e2e_jobs)
    job, _, _ = submit(stack, ds["id"])
    poll_until(stack, job["id"], lambda j: j["status"] in FINAL, 0.02, 120)
    out["polls"] = []
    for n in args.api_workers:
        print(f"[{broker}] GET /v1/jobs/{{id}}, API with {n} process(es), {args.connections} clients for "
              f"{args.duration:g} s", flush=True)
        if n == 1:
            polls = measure_polls(stack, stack.api_url, job["id"], args.load, args.connections, args.duration,
                                  args.poll_rate)
        else:
            with extra_api(stack, n) as base_url:
                polls = measure_polls(stack, base_url, job["id"], args.load, args.connections, args.duration,
                                      args.poll_rate)
        out["polls"].append({"api_processes": n, **polls})
    if args.rejected_uploads:
        print(f"[{broker}] API memory across {args.rejected_uploads} rejected uploads of "
              f"{args.rejected_upload_mb:g} MB", flush=True)
        out["rejected_uploads"] = measure_rejected_uploads(stack, args.rejected_uploads, args.rejected_upload_mb)
    return out


@contextlib.contextmanager
def extra_api(stack: Stack, workers: int):
    """`chainrule api --workers N` beside the stack's API (same database), stopped on the way out."""
    if "--workers" not in stack.cli("api", "--help").stdout:
        raise RuntimeError("this chainrule's `api` command has no --workers option")
    port = free_port()
    name = f"api-x{workers}"
    proc = stack.spawn(name, "api", "--host", LOOPBACK, "--port", str(port), "--workers", str(workers))
    base_url = f"http://{LOOPBACK}:{port}"
    try:
        def up():   # every server process started, not just the first to answer
            stack.check_alive(name)
            return stack.log_tail(name, 1_000_000).count("Application startup complete") >= workers and \
                httpx.get(base_url + "/healthz", timeout=2).status_code == 200
        wait_for(up, 90, 0.1, f"chainrule api --workers {workers} to start {workers} server processes")
        yield base_url
    finally:
        stop_process(proc)


# ----------------------------------------------------------------------------- report
def _fmt_s(x: float) -> str:
    return f"{x * 1e3:7.1f} ms" if x < 1 else f"{x:7.2f} s "


def table(results: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for r in results:
        b = r["broker"]
        target = TARGETS[f"submit_to_running_{b}_s"]
        s2r = r["submit_to_running"]
        c, s = s2r["client"], s2r["server"]
        rows.append((f"{b}: POST returned -> GET sees running", f"median {_fmt_s(c['median'])}  p90 {_fmt_s(c['p90'])}",
                     f"< {target * 1e3:.0f} ms (median)", "met" if c["median"] < target else "MISSED"))
        rows.append((f"{b}: started_at - created_at (server)", f"median {_fmt_s(s['median'])}  p90 {_fmt_s(s['p90'])}",
                     "", ""))
        p = s2r["post"]
        rows.append((f"{b}: POST /v1/jobs itself", f"median {_fmt_s(p['median'])}  p90 {_fmt_s(p['p90'])}", "", ""))
        e = r["end_to_end"]
        rows.append((f"{b}: 1-epoch job, POST -> succeeded", f"median {_fmt_s(e['client']['median'])}  "
                     f"(server {_fmt_s(e['server']['median']).strip()}, fit {_fmt_s(e['fit']['median']).strip()})",
                     "", ""))
        for q in r["polls"]:
            rps_ok = q["rps"] >= TARGETS["poll_rps"]
            errors = f", {q['non_2xx']} non-2xx" if q["non_2xx"] else ""
            rows.append((f"{b}: GET /v1/jobs/{{id}}, {q['api_processes']} API process(es), most req/s",
                         f"{q['rps']:7.0f} req/s  p50 {q['p50_ms']:5.1f} ms  p99 {q['p99_ms']:6.1f} ms{errors}",
                         f">= {TARGETS['poll_rps']:.0f} req/s", "met" if rps_ok else "MISSED"))
            a = q.get("at_rate")
            if a:
                rps_ok, p99_ok = a["rps"] >= 0.98 * a["rate"], a["p99_ms"] < TARGETS["poll_p99_ms"]
                ok = "met" if rps_ok and p99_ok and a["rate"] >= TARGETS["poll_rps"] else "MISSED"
                errors = f", {a['non_2xx']} non-2xx" if a["non_2xx"] else ""
                rows.append((f"{b}: GET /v1/jobs/{{id}}, {q['api_processes']} API process(es), at {a['rate']:g}/s",
                             f"{a['rps']:7.0f} req/s  p50 {a['p50_ms']:5.1f} ms  p99 {a['p99_ms']:6.1f} ms"
                             f"  max {a['max_ms']:6.1f} ms{errors}",
                             f"p99 < {TARGETS['poll_p99_ms']:.0f} ms at >= {TARGETS['poll_rps']:.0f} req/s", ok))
        u = r.get("rejected_uploads")
        if u:
            rows.append((f"{b}: API RSS, {u['uploads']} rejected {u['file_mb']:g} MB uploads",
                         f"{u['rss_before_mb']:.0f} -> {u['rss_after_mb']:.0f} MB (peak {u['peak_mb']:.0f} MB, "
                         f"{u['seconds']:.0f} s)", "flat", ""))
    widths = [max(len(row[i]) for row in rows + [("measure", "figure", "target", "")]) for i in range(4)]
    line = "  ".join("{:<%d}" % w for w in widths)
    out = [line.format("measure", "figure", "target", ""), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in rows]
    tools = sorted({q["tool"] for r in results for q in r["polls"]}
                   | {q["at_rate"]["tool"] for r in results for q in r["polls"] if "at_rate" in q})
    out.append("load generator: " + "; ".join(tools))
    missed = [f"{r['broker']}: {r['submit_to_running']['finished_before_seen_running']} of "
              f"{r['submit_to_running']['client']['n']} jobs finished between two polls (upper bound used)"
              for r in results if r["submit_to_running"]["finished_before_seen_running"]]
    out += missed
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--broker", choices=("embedded", "redis", "both"), default="both")
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                    help="sqlite: the embedded file; postgres: a throw-away server on loopback")
    ap.add_argument("--jobs", type=int, default=20, help="jobs for submit -> running")
    ap.add_argument("--e2e-jobs", type=int, default=5, help="jobs for the 1-epoch end-to-end time")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of status-poll load")
    ap.add_argument("--poll-rate", type=float, default=TARGETS["poll_rps"],
                    help="then polls at this constant rate, for the p99 target (0: skip)")
    ap.add_argument("--load", choices=("auto", "wrk", "httpx"), default="auto",
                    help="auto: wrk if installed or installable, else httpx")
    ap.add_argument("--api-workers", type=lambda v: [int(x) for x in v.split(",")],
                    default=sorted({1, os.cpu_count() or 1}),
                    help="comma-separated API process counts to put the status-poll load on (default 1 and "
                         "one per core)")
    ap.add_argument("--rejected-uploads", type=int, default=1000,
                    help="rejected uploads before the API's memory is read again (0: skip)")
    ap.add_argument("--rejected-upload-mb", type=float, default=1.0, help="size of each rejected CSV")
    ap.add_argument("--quick", action="store_true", help="5 jobs, 2 end to end, 3 s of load")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dirs and logs")
    ap.add_argument("--json", type=Path, help="save the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.jobs, args.e2e_jobs, args.duration, args.rejected_uploads = 5, 2, 3.0, 20
    brokers = ["embedded", "redis"] if args.broker == "both" else [args.broker]

    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C even where started with SIGINT ignored
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="chainrule-bench-"))
    servers: dict[str, Any] = {}
    results = []
    try:
        for broker in brokers:
            results.append(run_broker(root, broker, args, servers))
            for stack in servers.pop("stacks", []):   # one broker's processes off before the next
                stack.close()
    except BaseException as exc:
        if not isinstance(exc, (KeyboardInterrupt, Interrupted)):
            for stack in servers.get("stacks", []):
                print(stack.dump_logs(), file=sys.stderr)
        if type(exc).__name__ == "Skipped":   # e2e_support.missing(): a server binary is absent
            raise SystemExit(f"cannot start a server: {exc}") from None
        raise
    finally:
        for stack in servers.pop("stacks", []):
            stack.close()
        for name in ("redis", "pg"):
            if name in servers:
                servers[name].stop()
        if args.keep:
            print(f"data dirs and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print()
    load_after = os.getloadavg()
    print(f"chainrule service latency, {platform.node()}, {os.cpu_count()} CPUs, database {args.db}, "
          f"1-min load average {load_before[0]:.1f} before / {load_after[0]:.1f} after")
    print(table(results))
    out = {"machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                       "loadavg_before": load_before, "loadavg_after": load_after},
           "targets": TARGETS, "results": results}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
