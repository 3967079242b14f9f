"""Liveness and readiness probes (no auth: orchestrators call them).

/readyz says only which dependency is ready: its body is public, so the reason (an address, an
exception's text) goes to the log, never into the answer."""
from __future__ import annotations

import logging
import os
import tempfile

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from core import disk
from core.db import get_engine
from core.settings import Settings

from ..deps import SettingsDep
from ..errors import error_responses

router = APIRouter(tags=["health"])
log = logging.getLogger("chainrule.api")
BROKER_TIMEOUT_S = 1.0


def check_database(settings: Settings) -> None:
    with get_engine(settings.database_url).connect() as conn:
        conn.execute(text("SELECT 1"))


def check_broker(settings: Settings) -> None:
    if settings.embedded_broker:  # the filesystem transport: its queue directory must take a file
        queue_dir = settings.broker_dir / "queue"
        queue_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=queue_dir, prefix=".readyz-")
        os.close(fd)
        os.unlink(probe)
    elif settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        import redis
        client = redis.Redis.from_url(settings.broker_url, socket_timeout=BROKER_TIMEOUT_S,
                                      socket_connect_timeout=BROKER_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
    else:
        from kombu import Connection
        with Connection(settings.broker_url, connect_timeout=BROKER_TIMEOUT_S) as conn:
            conn.ensure_connection(max_retries=1)


def check_disk(settings: Settings) -> None:
    free = disk.free_bytes(settings)
    if free < settings.min_free_disk_bytes:
        raise OSError(f"{free} bytes free under {settings.data_dir}, less than min_free_disk_bytes "
                      f"({settings.min_free_disk_bytes})")


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database, the broker and free disk space",
            responses=error_responses(503, s503="The database or the broker is unavailable, or the data "
                                      "directory's disk has less than min_free_disk_bytes free"))
def readyz(settings: SettingsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    for name, check in (("database", check_database), ("broker", check_broker), ("disk", check_disk)):
        try:
            check(settings)
            checks[name] = "ok"
        except Exception as e:  # noqa: BLE001 - any failure means not ready; why goes to the log only
            log.warning("readyz: %s not ready: %s: %s", name, type(e).__name__, str(e)[:500])
            checks[name] = "unavailable"
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    failed = ", ".join(k for k, v in checks.items() if v != "ok")
    return JSONResponse({"detail": f"not ready: {failed}", "checks": checks}, status_code=503)
