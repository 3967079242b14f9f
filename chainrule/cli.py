"""`chainrule` command line: serve, api, worker, migrate, keys.

    chainrule serve --host 127.0.0.1 --port 8000 [--workers 1]   embedded: migrations, API, worker(s)
    chainrule api --host 0.0.0.0 --port 8000 [--workers 1]       API + sweeper (no migrations)
    chainrule worker [--queues cpu,auto] [--device auto|cpu|cuda] [--concurrency 1]
    chainrule migrate                                            Alembic upgrade to head
    chainrule keys create NAME                                   prints the new key as the last line
    chainrule keys list | chainrule keys revoke ID_OR_PREFIX

Configuration comes from CHAINRULE_* environment variables (core.settings); child
processes inherit them. This package is the composition root, the only one that imports both
api/ and worker/; each is imported lazily, so a `worker` process never imports FastAPI.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from typing import Sequence

from core.broker import QUEUES
from worker.options import DEVICE_CHOICES, DEVICE_ENV, QUEUES_ENV, THREADS_ENV

from .server import serve_http
from .supervisor import Children, stop_on_signals

log = logging.getLogger("chainrule.cli")

LOG_LEVELS = ("debug", "info", "warning", "error")


def _queues(value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    bad = [q for q in queues if q not in QUEUES]
    if not queues or bad:
        raise argparse.ArgumentTypeError(
            f"queues must be a comma-separated list of {', '.join(QUEUES)}; got {value!r}")
    return list(dict.fromkeys(queues))


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}")
    return n


def _port(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chainrule", description="Training as a service: API, workers, keys.")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="embedded mode: migrations, the API and worker processes in one command")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    serve.add_argument("--workers", type=_positive_int, default=1,
                       help="worker processes (one training job each); default 1")
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request (off: it costs "
                       "~10%% of a status poll's CPU)")

    api = sub.add_parser("api", help="the HTTP API and a sweeper thread (run `chainrule migrate` first)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=_port, default=8000)
    api.add_argument("--workers", type=_positive_int, default=1,
                     help="HTTP server processes sharing the port; default 1. One process serves status "
                          "polls on about one core (the GIL); use about one per core")
    api.add_argument("--access-log", action="store_true", help="log every HTTP request")

    worker = sub.add_parser("worker", help="a Celery worker (pool solo: one training job per process)")
    worker.add_argument("--queues", type=_queues, default=None,
                        help="comma-separated, of cpu, gpu, auto. Default: cpu,auto on a cpu worker, "
                             "gpu,auto on a cuda worker")
    worker.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="auto: cuda when a GPU is visible, else cpu; cuda fails without a GPU")
    worker.add_argument("--concurrency", type=_positive_int, default=1,
                        help="worker processes, each training one job at a time")
    worker.add_argument("--threads", type=_positive_int, default=None,
                        help="torch CPU threads per worker process (default: CHAINRULE_WORKER_THREADS, "
                             "else the cores divided by --concurrency)")

    sub.add_parser("migrate", help="upgrade the database schema to the latest migration")

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="create a key; prints it as the last line (shown only once)")
    create.add_argument("name")
    keys_sub.add_parser("list", help="list keys (names and prefixes, never the keys)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key")
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    if level != "debug":   # alembic narrates every plugin it loads at INFO
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _worker_command(queues: list[str], device: str) -> list[str]:
    return [sys.executable, "-m", "chainrule.cli", "worker", "--queues", ",".join(queues),
            "--device", device, "--concurrency", "1"]


# ----------------------------------------------------------------------------- commands
def cmd_serve(args, settings) -> int:
    import torch

    from core.db import upgrade

    upgrade(settings.database_url)
    queues = ["cpu", "auto"] + (["gpu"] if torch.cuda.is_available() else [])
    # the API shares the machine with the workers: split the cores between the workers
    os.environ.setdefault(THREADS_ENV, str(max(1, (os.cpu_count() or 1) // args.workers)))
    children = Children([_worker_command(queues, "auto") for _ in range(args.workers)])
    children.start()
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host

    def started():
        print(f"chainrule is serving on http://{shown}:{args.port}  (data in {settings.data_dir})", flush=True)
        print(f"Swagger UI: http://{shown}:{args.port}/docs", flush=True)
        print(f"{args.workers} worker process(es) on queues {','.join(queues)}; Ctrl-C stops everything",
              flush=True)

    try:
        serve_http(settings, args.host, args.port, access_log=args.access_log, on_started=started)
    finally:
        log.info("stopping worker processes")
        children.stop()
    return 0


def cmd_api(args, settings) -> int:
    serve_http(settings, args.host, args.port, workers=args.workers, access_log=args.access_log)
    return 0


def cmd_worker(args, settings) -> int:
    from worker import devices

    try:
        device = devices.resolve(args.device)
    except devices.DeviceUnavailable as exc:
        print(f"chainrule worker: {exc}", file=sys.stderr)
        return 2
    queues = args.queues or (["gpu", "auto"] if device.type == "cuda" else ["cpu", "auto"])
    if "gpu" in queues and device.type != "cuda":
        print(f"chainrule worker: queue gpu needs a GPU worker, but this one trains on {device.type} "
              "(use --device cuda on a machine with a GPU, or drop gpu from --queues)", file=sys.stderr)
        return 2
    os.environ[DEVICE_ENV] = device.type   # read by worker.app; inherited by children
    os.environ[QUEUES_ENV] = ",".join(queues)
    threads = args.threads or os.environ.get(THREADS_ENV) or max(1, (os.cpu_count() or 1) // args.concurrency)
    os.environ[THREADS_ENV] = str(threads)

    if args.concurrency > 1:
        children = Children([_worker_command(queues, device.type) for _ in range(args.concurrency)])
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
        f"--loglevel={args.log_level.upper()}", f"--hostname=chainrule-{os.getpid()}@%h",
        "--prefetch-multiplier=1", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])
    return 0


def cmd_migrate(args, settings) -> int:
    from core.db import upgrade

    upgrade(settings.database_url)
    print("database schema is up to date")
    return 0


def cmd_keys(args, settings) -> int:
    from core.db import session_scope, upgrade
    from core.keys import create_key, list_keys, revoke_key

    upgrade(settings.database_url)   # a no-op at head; makes `keys create` work on a fresh data dir
    with session_scope(settings.database_url) as s:
        if args.keys_command == "create":
            try:
                row, key = create_key(s, args.name, settings)
            except ValueError as exc:
                print(f"chainrule keys create: {exc}", file=sys.stderr)
                return 2
            print(f"created API key {row.name!r} (id {row.id}, prefix {row.prefix}); it is shown only once:")
            print(key)
        elif args.keys_command == "list":
            for row in list_keys(s):
                state = "revoked" if row.revoked_at else "active"
                print(f"{row.id}  {row.prefix}  {state:8}  {row.created_at:%Y-%m-%d %H:%M}  {row.name}")
        else:
            row = revoke_key(s, args.key)
            if row is None:
                print(f"chainrule keys revoke: no single active key has id or prefix {args.key!r}", file=sys.stderr)
                return 1
            print(f"revoked key {row.name!r} ({row.prefix})")
    return 0


COMMANDS = {"serve": cmd_serve, "api": cmd_api, "worker": cmd_worker, "migrate": cmd_migrate, "keys": cmd_keys}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    from core.settings import get_settings

    try:
        settings = get_settings()
    except ValueError as exc:   # e.g. the placeholder key pepper in production
        print(f"chainrule: configuration error: {exc}", file=sys.stderr)
        return 2
    return COMMANDS[args.command](args, settings)


if __name__ == "__main__":
    sys.exit(main())
