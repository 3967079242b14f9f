"""`chainrule` command line (typer): the server side, and the client commands of chainrule/commands/.

Server side (configured by CHAINRULE_* environment variables, core.settings):
    chainrule serve --host 127.0.0.1 --port 8000 [--workers 1]   embedded: migrations, API, worker(s)
    chainrule api --host 0.0.0.0 --port 8000 [--workers 1]       API + reconciler (no migrations)
    chainrule worker [--queues cpu,auto] [--device auto|cpu|cuda] [--concurrency 1]
    chainrule migrate                                            Alembic upgrade to head
    chainrule keys create NAME                                   prints the new key as the last line
    chainrule keys list | chainrule keys revoke ID_OR_PREFIX

Client side (over HTTP; --url/--key, CHAINRULE_URL / CHAINRULE_API_KEY, or `chainrule login`):
    chainrule login | datasets upload/list/show/delete | jobs submit/watch/list/show/cancel/delete/
    metrics/findings/weights/plot/predict/generate/gradcheck | jobs landscape request/watch/show/plot/
    cancel | sweeps submit/watch/list/show/cancel/delete   (see `chainrule jobs --help`)

This package is the composition root, the only one that imports both api/ and worker/; each is
imported lazily inside its command, so a `worker` process never imports FastAPI and the client
commands import neither.
"""
from __future__ import annotations

import logging
import os
import sys
from enum import Enum
from typing import Annotated, Optional, Sequence

import typer

from .commands import datasets, gradcheck, jobs, landscape, login, sweeps, webhooks
from .commands import export as export_commands

log = logging.getLogger("chainrule.cli")

SERVER = ("serve", "api", "worker", "migrate", "keys")
CLIENT = ("login", "datasets", "jobs", "sweeps", "webhooks")
app = typer.Typer(name="chainrule", no_args_is_help=True, pretty_exceptions_enable=False,
                  help=f"Training as a service: the server ({', '.join(SERVER)}) and its client "
                       f"({', '.join(CLIENT)}).")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (on the server's database).")
app.add_typer(keys_app, name="keys")
app.add_typer(datasets.app, name="datasets")
app.add_typer(jobs.app, name="jobs")
app.add_typer(sweeps.app, name="sweeps")
app.add_typer(webhooks.app, name="webhooks")
app.command("login")(login.login)
jobs.app.command("export")(export_commands.export)
jobs.app.command("script")(export_commands.script)
jobs.app.add_typer(landscape.app, name="landscape")
jobs.app.command("gradcheck")(gradcheck.gradcheck)


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.callback()
def root(ctx: typer.Context,
         log_level: Annotated[LogLevel, typer.Option(help="Server log level.")] = LogLevel.info) -> None:
    ctx.meta["log_level"] = log_level.value   # meta is shared with every subcommand's context
    logging.basicConfig(level=log_level.value.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    if log_level != LogLevel.debug:   # alembic narrates every plugin, httpx every request, at INFO
        logging.getLogger("alembic").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _settings():
    from core.settings import get_settings

    try:
        return get_settings()
    except ValueError as exc:   # e.g. the placeholder key pepper in production
        print(f"chainrule: configuration error: {exc}", file=sys.stderr)
        raise typer.Exit(2)


def _queues(value: Optional[str]) -> Optional[list[str]]:
    from core.broker import QUEUES, RANKS_QUEUE

    if value is None:
        return None
    queues = [q.strip() for q in value.split(",") if q.strip()]
    if not queues or any(q not in (*QUEUES, RANKS_QUEUE) for q in queues):
        raise typer.BadParameter(f"queues must be a comma-separated list of {', '.join((*QUEUES, RANKS_QUEUE))}; "
                                 f"got {value!r}")
    return list(dict.fromkeys(queues))


Host = Annotated[str, typer.Option(help="Address to listen on.")]
Port = Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")]
AccessLog = Annotated[bool, typer.Option("--access-log", help="Log every HTTP request (off: it costs "
                                                              "~10% of a status poll's CPU).")]


# ----------------------------------------------------------------------------- server commands
@app.command()
def serve(host: Host = "127.0.0.1", port: Port = 8000,
          workers: Annotated[int, typer.Option(min=1, help="Worker processes (one training job each).")] = 1,
          access_log: AccessLog = False) -> None:
    """Embedded mode: migrations, the API and worker processes in one command (stays in the foreground)."""
    import torch

    from core.db import upgrade
    from worker.options import THREADS_ENV

    from .server import serve_http
    from .supervisor import Children
    from .worker_main import worker_command

    settings = _settings()
    upgrade(settings.database_url)
    queues = ["cpu", "auto"] + (["gpu"] if torch.cuda.is_available() else [])
    # the API shares the machine with the workers: split the cores between the workers
    os.environ.setdefault(THREADS_ENV, str(max(1, (os.cpu_count() or 1) // workers)))
    children = Children([worker_command(queues, "auto") for _ in range(workers)])
    children.start()
    shown = "localhost" if host in ("0.0.0.0", "::") else host

    def started():
        print(f"chainrule is serving on http://{shown}:{port}  (data in {settings.data_dir})", flush=True)
        print(f"Swagger UI: http://{shown}:{port}/docs", flush=True)
        print(f"{workers} worker process(es) on queues {','.join(queues)}; Ctrl-C stops everything",
              flush=True)

    try:
        serve_http(settings, host, port, access_log=access_log, on_started=started)
    finally:
        log.info("stopping worker processes")
        children.stop()


@app.command()
def api(host: Host = "127.0.0.1", port: Port = 8000,
        workers: Annotated[int, typer.Option(min=1, help=(
            "HTTP server processes sharing the port. One process serves status polls on about one core "
            "(the GIL); use about one per core."))] = 1,
        access_log: AccessLog = False) -> None:
    """The HTTP API and a reconciler thread (run `chainrule migrate` first)."""
    from .server import serve_http

    serve_http(_settings(), host, port, workers=workers, access_log=access_log)


@app.command()
def worker(ctx: typer.Context,
           queues: Annotated[Optional[str], typer.Option(callback=_queues, help=(
               "Comma-separated, of cpu, gpu, auto, ranks. Default: cpu,auto,ranks on a cpu worker, "
               "gpu,auto,ranks on a cuda worker (ranks: other hosts' multi-process jobs)."))] = None,
           device: Annotated[Device, typer.Option(help=(
               "auto: cuda when a GPU is visible, else cpu; cuda fails without a GPU."))] = Device.auto,
           concurrency: Annotated[int, typer.Option(min=1, help="Worker processes, one job each.")] = 1,
           threads: Annotated[Optional[int], typer.Option(min=1, help=(
               "torch CPU threads per worker process (default: CHAINRULE_WORKER_THREADS, else the cores "
               "divided by --concurrency)."))] = None) -> None:
    """A Celery worker (pool solo: one training job per process)."""
    from .worker_main import run_worker

    code = run_worker(_settings(), queues, device.value, concurrency, threads,
                      ctx.meta["log_level"])
    raise typer.Exit(code)


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest migration."""
    from core.db import upgrade

    upgrade(_settings().database_url)
    print("database schema is up to date")


@keys_app.command("create")
def keys_create(name: str) -> None:
    """Create a key; prints it as the last line (shown only once)."""
    from core.db import session_scope, upgrade
    from core.keys import create_key

    settings = _settings()
    upgrade(settings.database_url)   # a no-op at head; makes `keys create` work on a fresh data dir
    with session_scope(settings.database_url) as s:
        try:
            row, key = create_key(s, name, settings)
        except ValueError as exc:
            print(f"chainrule keys create: {exc}", file=sys.stderr)
            raise typer.Exit(2)
        print(f"created API key {row.name!r} (id {row.id}, prefix {row.prefix}) in {settings.data_dir}; "
              "it is shown only once:")
        print(key)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (names and prefixes, never the keys)."""
    from core.db import session_scope, upgrade
    from core.keys import list_keys

    settings = _settings()
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as s:
        for row in list_keys(s):
            state = "revoked" if row.revoked_at else "active"
            print(f"{row.id}  {row.prefix}  {state:8}  {row.created_at:%Y-%m-%d %H:%M}  {row.name}")


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's id or prefix.")]) -> None:
    """Revoke a key by id or prefix."""
    from core.db import session_scope, upgrade
    from core.keys import revoke_key

    settings = _settings()
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as s:
        row = revoke_key(s, key)
        if row is None:
            print(f"chainrule keys revoke: no single active key has id or prefix {key!r}", file=sys.stderr)
            raise typer.Exit(1)
        print(f"revoked key {row.name!r} ({row.prefix})")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        app(args=list(argv) if argv is not None else None, prog_name="chainrule")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
