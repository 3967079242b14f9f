"""Database engine and sessions, shared by api/ and worker/. The schema is made by migrations only."""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import psycopg
from sqlalchemy import create_engine, event, exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("chainrule.db")
T = TypeVar("T")
# SQLite's answers for "not now" (another writer, a full or unreadable disk), not for a bad statement
_SQLITE_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL")
# PostgreSQL SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57 operator
# intervention (admin shutdown, cannot connect now, statement cancelled)
_PG_UNAVAILABLE_CLASSES = ("08", "53", "57")


def _ensure_sqlite_dir(url: str) -> None:
    """The SQLite file's directory, and the file itself readable by its owner only (0600, as the
    artifacts are; SQLite gives its -wal and -shm files the database file's permissions)."""
    path = url.split("///", 1)[-1]
    if url.startswith("sqlite") and path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(path, 0o600)                  # a file an older version made 0644


@dataclass(frozen=True)
class PoolLimits:
    """A process's connections to one database: `size` kept, `overflow` more when busy, and how long a
    request waits for one to come free before it is told the service is busy (not that the database is
    down: a pool timeout is is_busy, not an outage)."""
    size: int = 20
    overflow: int = 20
    timeout_s: float = 30.0


_pool_limits: dict[str, PoolLimits] = {}


def set_pool_limits(url: str, limits: PoolLimits) -> None:
    """The limits of the engines get_engine(url) makes from now on (the API sets a short timeout)."""
    _pool_limits[url] = limits


def get_engine(url: str) -> Engine:
    return _engine(url, _pool_limits.get(url, PoolLimits()))


@lru_cache
def _engine(url: str, pool: PoolLimits) -> Engine:
    _ensure_sqlite_dir(url)
    sizes = dict(pool_size=pool.size, max_overflow=pool.overflow, pool_timeout=pool.timeout_s)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **sizes)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _):  # WAL: readers never wait on the worker's writes
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
        return engine
    engine = create_engine(url, **sizes)
    _ping_after_idle(engine)
    return engine


# A pooled connection idle this long is pinged before use (SQLAlchemy's pre-ping, done only then):
# a connection in steady use is known to work, and a ping on every checkout is one more round trip
# per request, ~20% of the status poll's throughput on PostgreSQL (bench/service_latency.py). A
# restarted database cuts every connection: those idle through the restart are pinged and replaced
# on their next checkout; one in use then fails once, and that failure invalidates the whole pool.
PING_AFTER_IDLE_S = 1.0


def _ping_after_idle(engine: Engine) -> None:
    @event.listens_for(engine, "connect")                 # a new connection needs no ping
    @event.listens_for(engine, "checkin")
    def _fresh(dbapi_conn, record) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, proxy) -> None:
        if time.monotonic() - record.info.get("checked_in_at", 0.0) < PING_AFTER_IDLE_S:
            return
        dialect = engine.dialect
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, None):    # the pool replaces it with a new connection
                raise sa_exc.DisconnectionError(f"the pooled connection is gone: {exc}") from exc
            raise


class Busy(Exception):
    """No connection of a pool of ours (core.poll_reads) came free in time; SQLAlchemy's pools raise
    their own TimeoutError for the same."""


def is_busy(exc: BaseException) -> bool:
    """True when no pooled connection came free within the pool's timeout: this process has all the
    work it can take (a 503 "busy"), the database itself may be fine."""
    return isinstance(exc, (sa_exc.TimeoutError, Busy))


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database cannot be reached or cannot serve now (a 503, a retry),
    False for errors that are bugs whenever they happen (an integrity error, a bad statement).
    A busy pool (is_busy) counts: a worker retries it the same way."""
    if is_busy(exc):
        return True
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):   # psycopg's own (core.poll_reads)
        driver_error = exc
    elif isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlite_error = getattr(exc.orig, "sqlite_errorname", None)
        if sqlite_error is not None:
            return sqlite_error.startswith(_SQLITE_UNAVAILABLE)
        if not isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return False
        driver_error = exc.orig
    else:
        return False
    state = getattr(driver_error, "sqlstate", None)   # None: the driver lost or never had a connection
    return state is None or state[:2] in _PG_UNAVAILABLE_CLASSES


def retry_unavailable(action: Callable[[], T], what: str, patience_s: float, first_wait_s: float = 0.25,
                      max_wait_s: float = 5.0) -> T:
    """action(), tried again with a doubling wait (first_wait_s .. max_wait_s) while the database is
    unavailable, for at most patience_s; then its last error is raised. Other errors at once."""
    deadline, wait = time.monotonic() + patience_s, first_wait_s
    while True:
        try:
            return action()
        except Exception as exc:
            if not is_unavailable(exc) or time.monotonic() + wait > deadline:
                raise
            log.warning("%s: database unavailable (%s); trying again in %.2f s", what, type(exc).__name__, wait)
        time.sleep(wait)
        wait = min(2 * wait, max_wait_s)


def get_sessionmaker(url: str) -> sessionmaker[Session]:
    return _sessionmaker(get_engine(url))


@lru_cache
def _sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def upgrade(url: str, revision: str = "head") -> None:
    """Run Alembic migrations: the only way the schema is made."""
    from alembic import command
    from alembic.config import Config

    import migrations

    _ensure_sqlite_dir(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, revision)
