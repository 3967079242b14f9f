"""`chainrule worker`: pick the device and queues, then run Celery's solo worker (or supervise
--concurrency N of them). Imports nothing of api/: a worker process never loads FastAPI."""
from __future__ import annotations

import os
import sys
import threading

from worker.options import DEVICE_ENV, QUEUES_ENV, THREADS_ENV

from .supervisor import Children, stop_on_signals


def worker_command(queues: list[str], device: str) -> list[str]:
    return [sys.executable, "-m", "chainrule.cli", "worker", "--queues", ",".join(queues),
            "--device", device, "--concurrency", "1"]


def run_worker(settings, queues: list[str] | None, device_choice: str, concurrency: int, threads: int | None,
               log_level: str) -> int:
    from worker import devices

    try:
        device = devices.resolve(device_choice)
    except devices.DeviceUnavailable as exc:
        print(f"chainrule worker: {exc}", file=sys.stderr)
        return 2
    queues = queues or (["gpu", "auto", "ranks"] if device.type == "cuda" else ["cpu", "auto", "ranks"])
    if "gpu" in queues and device.type != "cuda":
        print(f"chainrule worker: queue gpu needs a GPU worker, but this one trains on {device.type} "
              "(use --device cuda on a machine with a GPU, or drop gpu from --queues)", file=sys.stderr)
        return 2
    os.environ[DEVICE_ENV] = device.type   # read by worker.app; inherited by children
    os.environ[QUEUES_ENV] = ",".join(queues)   # what the worker registers (core.workers)
    threads = threads or os.environ.get(THREADS_ENV) or max(1, (os.cpu_count() or 1) // concurrency)
    os.environ[THREADS_ENV] = str(threads)

    if concurrency > 1:
        children = Children([worker_command(queues, device.type) for _ in range(concurrency)])
        stop = threading.Event()
        stop_on_signals(stop)
        children.start()
        while not stop.wait(1.0):
            pass
        children.stop()
        return 0

    from worker.app import app
    app.worker_main([
        "worker", "--pool=solo", "--concurrency=1", f"--queues={','.join(queues)}",
        f"--loglevel={log_level.upper()}", f"--hostname=chainrule-{os.getpid()}@%h",
        "--prefetch-multiplier=1", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])
    return 0
