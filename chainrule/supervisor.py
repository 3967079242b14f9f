"""Child processes of `chainrule serve` and `chainrule worker --concurrency N`: started, restarted
when one dies unexpectedly, stopped together, and never orphaned."""
from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time

log = logging.getLogger("chainrule.supervisor")

MAX_RESTARTS_PER_MINUTE = 5


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the process that started it dies (even by SIGKILL)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def stop_on_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set `stop` (call from the main thread)."""
    def handler(signum, _frame):
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class Children:
    """Worker child processes: started, restarted if one dies unexpectedly, stopped together."""

    def __init__(self, commands: list[list[str]]):
        self.commands = commands
        self.procs: list[subprocess.Popen | None] = [None] * len(commands)
        self.stopping = threading.Event()
        self._restarts: list[list[float]] = [[] for _ in commands]
        self._lock = threading.Lock()

    def _spawn(self, i: int) -> subprocess.Popen:
        proc = subprocess.Popen(self.commands[i], preexec_fn=die_with_parent)
        log.info("started worker process %d: %s", proc.pid, " ".join(self.commands[i][2:]))
        return proc

    def start(self) -> None:
        with self._lock:
            for i in range(len(self.commands)):
                self.procs[i] = self._spawn(i)
        threading.Thread(target=self.watch, daemon=True, name="watch-workers").start()

    def watch(self, interval: float = 1.0) -> None:
        """Restart a child that exits while we are not stopping (at most 5 times a minute each)."""
        while not self.stopping.wait(interval):
            with self._lock:
                if self.stopping.is_set():
                    return
                for i, proc in enumerate(self.procs):
                    if proc is None or proc.poll() is None:
                        continue
                    now = time.monotonic()
                    recent = [t for t in self._restarts[i] if now - t < 60]
                    if len(recent) >= MAX_RESTARTS_PER_MINUTE:
                        continue
                    log.warning("worker process %d exited with %s; starting another", proc.pid, proc.returncode)
                    self._restarts[i] = recent + [now]
                    self.procs[i] = self._spawn(i)

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p is not None and p.poll() is None]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Celery's warm shutdown: the running job is handed back to the queue), then
        SIGKILL whatever is still there after `timeout`; always reaps, so nothing is orphaned."""
        self.stopping.set()
        with self._lock:
            procs = self.alive()
            for p in procs:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            for p in procs:
                try:
                    p.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("worker process %d did not stop in %.0f s; killing it", p.pid, timeout)
                    p.kill()
                    p.wait()
