"""The status poll's read of one job row on PostgreSQL, on the event loop: psycopg's asyncio
connections and a prepared statement, without SQLAlchemy and without a thread hop.

`GET /v1/jobs/{id}` is the API's hottest path. Through SQLAlchemy's pool behind run_in_threadpool a
poll cost the API process ~0.98 ms of CPU, a whole core at 1,000 polls a second, so the queue only
grew; read this way it costs ~0.7 ms (bench/service_latency.py, PostgreSQL + Redis, one process).

A pool of at most `max_size` connections, opened on demand as SQLAlchemy's QueuePool opens them, so a
database back from a restart answers the very next poll (psycopg_pool reconnects in the background
with a back-off: polls kept failing for seconds after the database was back). As core.db does for
SQLAlchemy's pool, a connection idle for PING_AFTER_IDLE_S is pinged before it is used and replaced
when the ping fails; one that failed or was cancelled mid-read is closed, never reused. Errors speak
core.db's vocabulary: no connection free within the timeout is `Busy` (a 503 "busy"); a database
that cannot be reached raises psycopg's OperationalError, which is_unavailable calls unavailable.

The pool belongs to the event loop that opened it: the API opens it in its lifespan, on the server's.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row
from psycopg.types.json import set_json_loads
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from .db import PING_AFTER_IDLE_S, Busy
from .tables import JOB_ROW

JOB_ROW_SQL = str(JOB_ROW.compile(dialect=postgresql.psycopg.dialect()))   # %(job_id)s: psycopg's placeholder
CONNECT_TIMEOUT_S = 5       # libpq's connect_timeout: a host that does not answer is unavailable, not a hang


def libpq_conninfo(url: str) -> str:
    """`postgresql+psycopg://u:p@h/db` (SQLAlchemy's URL) as libpq takes it: `postgresql://u:p@h/db`."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PollReads:
    def __init__(self, url: str, max_size: int, timeout_s: float):
        self.conninfo, self.max_size, self.timeout_s = libpq_conninfo(url), max_size, timeout_s
        self.loop: asyncio.AbstractEventLoop | None = None     # the loop it was opened on, the only one it serves
        self._idle: list[tuple[AsyncConnection, float]] = []   # (connection, idle since); the newest last
        self._slots: asyncio.Semaphore | None = None

    async def open(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self.max_size)

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop()[0].close()

    async def job_row(self, job_id: str) -> Any | None:
        """JOB_ROW's row for job_id (attributes by column name, as a SQLAlchemy row's), or None."""
        await self._take_slot()
        try:
            conn = await self._checkout()
            try:
                cursor = await conn.execute(JOB_ROW_SQL, {"job_id": job_id})
                row = await cursor.fetchone()
            except BaseException:
                await conn.close()
                raise
            self._idle.append((conn, time.monotonic()))
            return row
        finally:
            self._slots.release()

    async def _take_slot(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), self.timeout_s)
        except TimeoutError:
            raise Busy(f"all {self.max_size} status-poll connections stayed in use for {self.timeout_s} s") from None

    async def _checkout(self) -> AsyncConnection:
        while self._idle:
            conn, since = self._idle.pop()
            if time.monotonic() - since < PING_AFTER_IDLE_S:
                return conn
            try:
                await conn.execute("SELECT 1")
                return conn
            except psycopg.Error:           # cut while idle (a restart): try the next, or connect anew
                await conn.close()
        conn = await AsyncConnection.connect(self.conninfo, autocommit=True, row_factory=namedtuple_row,
                                             connect_timeout=CONNECT_TIMEOUT_S)
        set_json_loads(orjson.loads, conn)   # the row's JSON columns: a sixth of the read's CPU with json.loads
        return conn
