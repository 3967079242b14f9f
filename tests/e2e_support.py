"""Real servers and real processes for the end-to-end tests: nothing mocked.

- PostgresServer: initdb + postgres on 127.0.0.1 and a free port, in a temporary directory
  owned by the `postgres` OS user when we are root (postgres refuses to run as root).
- RedisServer: redis-server on 127.0.0.1 and a free port, no persistence.
- Stack: one chainrule installation (a data dir, a database URL, a broker URL, short
  liveness timings) whose API and workers run as subprocesses of the `chainrule` CLI.
When the PostgreSQL or Redis binaries are missing the tests that need them skip, or fail
when the CI environment variable is set.
"""
from __future__ import annotations

import contextlib
import glob
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pytest

LOOPBACK = "127.0.0.1"
# The ceiling of a wait for work (a job to end, a server to answer, a process to stop). Tests wait on
# the event itself (status polling, a file, a port), never on a time; a passing run never reaches
# this, so it is generous: a machine running two suites at once is several times slower. The test's
# own pytest-timeout (HANG_GUARD_S for the tests that wait on several such events) is the hang guard.
CEILING_S = 240.0
HANG_GUARD_S = 600

# liveness timings for tests: a lost worker is noticed in ~3 s, a cancel within ~0.3 s
FAST_TIMINGS = {
    "CHAINRULE_HEARTBEAT_INTERVAL_S": "0.3",
    "CHAINRULE_HEARTBEAT_TIMEOUT_S": "3",
    "CHAINRULE_CANCEL_POLL_INTERVAL_S": "0.2",
    "CHAINRULE_PROGRESS_INTERVAL_S": "0.2",
    "CHAINRULE_RECONCILE_INTERVAL_S": "0.5",
    "CHAINRULE_RESEND_AFTER_S": "5",
    "CHAINRULE_BROKER_POLL_INTERVAL_S": "0.05",
    "CHAINRULE_WORKER_THREADS": "1",   # 2 cores shared by pytest, the API and workers
}


def missing(what: str, install: str = "Debian's postgresql and redis-server packages") -> None:
    """No server binary (or browser): a skip on a developer machine, a failure in CI (CI must run
    everything)."""
    message = f"{what} not found; install {install}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: these tests must run)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Exited(RuntimeError):
    """A process a test waits on has exited: the wait is over at once, not at its ceiling."""


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll until predicate() is truthy; returns its value or raises AssertionError after timeout.
    An exception from predicate() means "not yet", but Exited, which ends the wait."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exited:
            raise
        except Exception as exc:  # not up yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Signal, wait, SIGKILL if needed; always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False


def children_of(pid: int) -> list[int]:
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(stat.split("/")[2]))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return out


# ----------------------------------------------------------------------------- PostgreSQL
def find_postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("postgres")
    return Path(which).parent if which and shutil.which("initdb") else None


class PostgresServer:
    def __init__(self):
        bindir = find_postgres_bindir()
        if bindir is None:
            missing("PostgreSQL (initdb, postgres)")
        self.bindir = bindir
        self.port = free_port()
        # not under pytest's tmp dir: it is root's 0700, and the server runs as `postgres`
        self.root = Path(tempfile.mkdtemp(prefix="chainrule-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "sock"
        self.sockets.mkdir()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                missing("the `postgres` OS user (postgres refuses to run as root)")
            for path in (self.root, self.sockets):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.log = self.root / "postgres.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PostgresServer":
        subprocess.run(self.as_user + [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                                       "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self.resume()

    def resume(self) -> "PostgresServer":
        """Start the server on its data directory and port (again, after `pause`)."""
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.as_user + [str(self.bindir / "postgres"), "-D", str(self.data), "-h", LOOPBACK,
                            "-p", str(self.port), "-k", str(self.sockets), "-F",
                            "-c", "max_connections=300", "-c", "shared_buffers=32MB"],
            stdout=log, stderr=subprocess.STDOUT)
        import psycopg

        def ready():
            if self.proc.poll() is not None:
                raise Exited(f"postgres exited: {self.log.read_text()[-2000:]}")
            with psycopg.connect(self.admin_dsn(), connect_timeout=1):
                return True
        wait_for(ready, CEILING_S, 0.1, "postgres to accept connections")
        return self

    def admin_dsn(self, dbname: str = "postgres") -> str:
        return f"host={LOOPBACK} port={self.port} user=postgres dbname={dbname}"

    def create_database(self) -> str:
        """A fresh database per test; returns its SQLAlchemy URL."""
        import psycopg
        name = f"chainrule_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/{name}"

    def pause(self) -> None:
        """Shut the server down (fast: open connections are cut), keeping its data for `resume`."""
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT is postgres's fast shutdown; sent to the postmaster itself, since runuser
            # does not pass SIGINT on to the process it runs
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
                os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
            stop_process(self.proc, signal.SIGTERM, 10)

    def stop(self) -> None:
        self.pause()
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------- Redis
class RedisServer:
    def __init__(self):
        self.binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
        if self.binary is None:
            missing("redis-server")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chainrule-redis-"))
        self.proc: subprocess.Popen | None = None
        self._next_db = 0

    def start(self) -> "RedisServer":
        return self.resume()

    def resume(self) -> "RedisServer":
        """Start redis-server on its port (again, after `pause`: empty, as after a crash)."""
        self.proc = subprocess.Popen(
            [self.binary, "--bind", LOOPBACK, "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--databases", "64"],
            stdout=open(self.root / "redis.log", "ab"), stderr=subprocess.STDOUT)
        import redis

        def ready():
            if self.proc.poll() is not None:
                raise Exited("redis-server exited: " + (self.root / "redis.log").read_text()[-2000:])
            return redis.Redis(host=LOOPBACK, port=self.port, socket_connect_timeout=1).ping()
        wait_for(ready, CEILING_S, 0.1, "redis to answer PING")
        return self

    def new_url(self) -> str:
        """A database index no earlier test used, flushed: tests never see each other's messages."""
        import redis
        self._next_db = self._next_db % 63 + 1
        redis.Redis(host=LOOPBACK, port=self.port, db=self._next_db).flushdb()
        return f"redis://{LOOPBACK}:{self.port}/{self._next_db}"

    def pause(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, 10)

    def stop(self) -> None:
        self.pause()
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------- the service
def chainrule_cmd() -> list[str]:
    """The console script a user runs: the one installed beside the Python running the tests (the
    .venv's under scripts/test.sh), else the one on PATH, else the module."""
    beside = Path(sys.executable).parent / "chainrule"
    exe = str(beside) if beside.exists() else shutil.which("chainrule")
    return [exe] if exe else [sys.executable, "-m", "chainrule.cli"]


class Stack:
    """One chainrule deployment made of real processes sharing a data dir, a database and a broker."""

    def __init__(self, root: Path, *, database_url: str | None = None, broker_url: str | None = None,
                 **settings: Any):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = root / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINRULE_")}
        self.env.update(FAST_TIMINGS)
        self.env.update({"CHAINRULE_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1",
                         "CHAINRULE_ENVIRONMENT": "development"})
        if database_url:
            self.env["CHAINRULE_DATABASE_URL"] = database_url
        if broker_url:
            self.env["CHAINRULE_BROKER_URL"] = broker_url
        for k, v in settings.items():
            self.env[f"CHAINRULE_{k.upper()}"] = str(v)
        self.procs: dict[str, subprocess.Popen] = {}
        self.groups: set[str] = set()          # processes started in a session of their own (and children)
        self.logs: dict[str, Path] = {}
        self.api_url: str | None = None
        self.key: str | None = None
        self._client: httpx.Client | None = None

    # -- settings and database, as the processes see them
    def settings(self):
        from core.settings import Settings
        return Settings(**{k[len("CHAINRULE_"):].lower(): v for k, v in self.env.items()
                           if k.startswith("CHAINRULE_") and k != "CHAINRULE_WORKER_THREADS"})

    def session(self):
        from core.db import get_sessionmaker
        return get_sessionmaker(self.settings().database_url)()

    # -- the CLI
    def cli(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(chainrule_cmd() + list(args), env=self.env, cwd=self.root, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"chainrule {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    def create_key(self, name: str = "e2e") -> str:
        """Through the CLI, as a user does: `chainrule keys create NAME` (migrates a fresh database)."""
        out = self.cli("keys", "create", name).stdout.strip().splitlines()
        self.key = out[-1].strip()      # the key is the last line
        return self.key

    def create_key_in_process(self, name: str = "e2e") -> str:
        """The same, without a 2-5 s interpreter start: for tests about something else."""
        from core.db import session_scope, upgrade
        from core.keys import create_key
        settings = self.settings()
        upgrade(settings.database_url)
        with session_scope(settings.database_url) as s:
            _, self.key = create_key(s, name, settings)
        return self.key

    def spawn(self, name: str, *args: str, new_session: bool = False, env: dict | None = None) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        self.logs[name] = log
        proc = subprocess.Popen(chainrule_cmd() + list(args), env={**self.env, **(env or {})}, cwd=self.root,
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=new_session)
        self.procs[name] = proc
        if new_session:
            self.groups.add(name)
        return proc

    def start_api(self) -> subprocess.Popen:
        port = free_port()
        proc = self.spawn("api", "api", "--host", LOOPBACK, "--port", str(port))
        self.api_url = f"http://{LOOPBACK}:{port}"
        return proc

    def start_worker(self, name: str = "worker", queues: str = "cpu,auto", device: str = "cpu") -> subprocess.Popen:
        alive = self.root / f"{name}.alive"
        alive.unlink(missing_ok=True)
        return self.spawn(name, "worker", "--queues", queues, "--device", device,
                          env={"CHAINRULE_WORKER_ALIVE_FILE": str(alive)})

    def restart_api(self, sig: int = signal.SIGKILL) -> None:
        """Stop the API with `sig` and start a new one (on a new port); the client follows it."""
        stop_process(self.procs["api"], sig)
        if self._client is not None:
            self._client.close()
            self._client = None
        self.start_api()
        self.wait_api()

    def wait_api(self, timeout: float = CEILING_S, name: str = "api") -> None:
        def up():
            self.check_alive(name)
            return httpx.get(self.api_url + "/healthz", timeout=2).status_code == 200
        wait_for(up, timeout, 0.1, "the API to answer /healthz")

    def wait_worker(self, name: str = "worker", timeout: float = CEILING_S) -> None:
        """Ready = its reconciler thread (started on Celery's worker_ready) has touched the alive file."""
        def ready():
            self.check_alive(name)
            return (self.root / f"{name}.alive").exists()
        wait_for(ready, timeout, 0.1, f"{name} to be ready")

    def up(self, workers: int = 1, cli_key: bool = False) -> "Stack":
        """Key (runs the migrations), API and workers started together, then waited for."""
        self.create_key() if cli_key else self.create_key_in_process()
        self.start_api()
        names = ["worker"] + [f"worker{i}" for i in range(2, workers + 1)]
        for name in names:
            self.start_worker(name)
        self.wait_api()
        for name in names:
            self.wait_worker(name)
        return self

    def wait_sweeps(self, name: str = "worker", sweeps: int = 2) -> None:
        """Until the worker's reconciler has swept `sweeps` more times (each sweep touches its alive
        file): "nothing happened" is then shown over that many passes, however slow the machine."""
        alive, seen = self.root / f"{name}.alive", set()

        def swept():
            self.check_alive(name)
            seen.add(alive.stat().st_mtime_ns)
            return len(seen) > sweeps         # the first mtime seen is the pass before the wait
        wait_for(swept, CEILING_S, 0.02, f"{name} to sweep {sweeps} times")

    def check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise Exited(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.logs.get(name)
        return path.read_text(errors="replace")[-chars:] if path and path.exists() else ""

    def dump_logs(self) -> str:
        return "\n".join(f"----- {name}.log -----\n{self.log_tail(name)}" for name in self.logs)

    # -- HTTP
    @property
    def http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.api_url, timeout=CEILING_S,
                                        headers={"Authorization": f"Bearer {self.key}"})
        return self._client

    def client(self):
        """The Python client a user would use, pointed at this stack's API with its key."""
        from chainrule.client import Client
        return Client(self.api_url, self.key, timeout=CEILING_S)

    def start_serve(self) -> subprocess.Popen:
        """`chainrule serve`: migrations, the API and a worker process, as one command (embedded)."""
        port = free_port()
        # its own process group, so that close() ends serve and its children at once
        proc = self.spawn("serve", "serve", "--host", LOOPBACK, "--port", str(port), new_session=True)
        self.api_url = f"http://{LOOPBACK}:{port}"
        return proc

    def upload_csv(self, content: bytes, name: str = "blobs") -> dict:
        r = self.http.post("/v1/datasets", files={"file": (f"{name}.csv", content, "text/csv")},
                           data={"name": name})
        assert r.status_code == 201, r.text
        return r.json()

    def submit(self, dataset_id: str, **overrides) -> dict:
        body = {"dataset_id": dataset_id, "model": {"layers": [
                    {"type": "linear", "out_features": 32}, {"type": "relu"},
                    {"type": "linear", "out_features": 3}]},
                "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01},
                "epochs": 8, "batch_size": 32, "validation_split": 0.25, "seed": 0, "device": "cpu"}
        body.update(overrides)
        r = self.http.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        return r.json()

    def job(self, job_id: str) -> dict:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_job(self, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = CEILING_S,
                 watch: tuple[str, ...] = ("api", "worker")) -> dict:
        def done():
            for name in watch:
                if name in self.procs and self.procs[name].returncode is None:
                    self.check_alive(name)
            j = self.job(job_id)
            return j if j["status"] in statuses else None
        return wait_for(done, timeout, 0.1, f"job {job_id} to reach {statuses}")

    # -- teardown
    def close(self) -> None:
        # workers, and process groups (serve with the worker it runs), are SIGKILLed: a warm Celery
        # shutdown costs 2-5 s of polling per stack, and the graceful paths have their own tests
        # (serve's shutdown, the reconciler after a SIGKILL)
        for name, proc in self.procs.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if name in self.groups:
                        os.killpg(proc.pid, signal.SIGKILL)
                    else:
                        proc.send_signal(signal.SIGKILL if name.startswith("worker") else signal.SIGTERM)
        for proc in self.procs.values():
            stop_process(proc, signal.SIGTERM, 15)
        if self._client is not None:
            self._client.close()
        from core.db import get_engine
        with contextlib.suppress(Exception):
            get_engine(self.settings().database_url).dispose()


# ----------------------------------------------------------------------------- data
def blobs_csv(n: int = 600, seed: int = 0, features: int = 4) -> bytes:
    """A generated 3-class data set: Gaussian blobs around three centres, labelled by name."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(3, features))
    labels = rng.integers(0, 3, size=n)
    X = centres[labels] + rng.normal(size=(n, features))
    names = np.array(["alpha", "beta", "gamma"])
    out = io.StringIO()
    out.write(",".join([f"x{i}" for i in range(features)] + ["label"]) + "\n")
    for row, label in zip(X, names[labels]):
        out.write(",".join(f"{v:.5f}" for v in row) + f",{label}\n")
    return out.getvalue().encode()
