"""What `GET /v1/jobs/{id}/events` sends: a job's progress, epochs and status as server-sent events.

Wire format (text/event-stream), one event per message:

    id: status=running;epoch_row=12;progress=3/140
    event: epoch
    data: {"epoch": 3, "train_loss": 0.41, "val_loss": 0.44, "val_accuracy": 0.87, "layers": {...}}

Event kinds and their `data` (JSON):
- `status`: {"status", "error": null | {"code", "message"}} when the status changes; the stream
  ends after a final one (succeeded, failed, cancelled).
- `epoch`: one finished epoch's metrics, as an entry of GET /v1/jobs/{id}/metrics, in order. An
  epoch trained again after a resume from a checkpoint is sent again.
- `progress`: {"epoch", "epochs", "step", "total_steps", "fraction"} when it changes.
- `finding`: one finding of the diagnostics rules, as an item of GET /v1/jobs/{id}/findings, in the
  order found (by id). A finding of an epoch trained again after a resume is sent again.
Comments (`: ping ...`) keep idle connections open through proxies.

The stream reads what the worker already writes (the job row, its job_metrics rows) every
`events_poll_interval_s`, so it works the same on SQLite and PostgreSQL, whatever the broker.
Each event's `id` is the cursor after it: one position per source (`key=value;...`). A client
that reconnects with `Last-Event-ID: <id>` gets exactly what came after it, in order. A source
is a function (read, cursor) -> [Event]; adding a kind of event is adding one to SOURCES.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection, Row

from core import findings as stored_findings
from core.db import get_engine
from core.lifecycle import FINAL
from core.tables import JOB_ROW, Job, JobFinding, JobMetric

from .schemas import job_fields, metrics_entry

Cursor = dict[str, str]   # source key -> the position last sent


@dataclass(frozen=True)
class Event:
    kind: str               # progress | epoch | status | finding
    data: dict[str, Any]
    key: str                # the cursor entry this event advances ...
    position: str           # ... to this


@dataclass
class Read:
    """One poll: the job row as read now, and the connection to read anything else by."""
    conn: Connection
    job: Row


def status_event(read: Read) -> Event:
    job = job_fields(read.job)
    return Event("status", {"status": job["status"], "error": job["error"]}, "status", str(read.job.status))


def active_status(read: Read, cursor: Cursor) -> list[Event]:
    """queued / running, sent first so that what follows reads as part of it."""
    if read.job.status in FINAL or cursor.get("status") == read.job.status:
        return []
    return [status_event(read)]


_METRICS_AFTER = (select(JobMetric.__table__).where(JobMetric.job_id == bindparam("job_id"),
                                                    JobMetric.id > bindparam("after"))
                  .order_by(JobMetric.id))


def _row_after(cursor: Cursor, key: str) -> int:
    """The last row id sent for a source; an unreadable one starts it from the beginning."""
    value = cursor.get(key, "")
    return int(value) if value.isdigit() and len(value) < 19 else 0


def epochs(read: Read, cursor: Cursor) -> list[Event]:
    """Epoch rows not sent yet, by row id: the order they were written in."""
    after = _row_after(cursor, "epoch_row")
    rows = read.conn.execute(_METRICS_AFTER, {"job_id": read.job.id, "after": after})
    return [Event("epoch", metrics_entry(row), "epoch_row", str(row.id)) for row in rows]


_FINDINGS_AFTER = (select(JobFinding.__table__).where(JobFinding.job_id == bindparam("job_id"),
                                                      JobFinding.id > bindparam("after"))
                   .order_by(JobFinding.id))


def findings(read: Read, cursor: Cursor) -> list[Event]:
    """Findings not sent yet, by row id: the order they were found in."""
    after = _row_after(cursor, "finding_row")
    rows = read.conn.execute(_FINDINGS_AFTER, {"job_id": read.job.id, "after": after})
    return [Event("finding", stored_findings.public(row), "finding_row", str(row.id)) for row in rows]


def progress(read: Read, cursor: Cursor) -> list[Event]:
    now = job_fields(read.job)["progress"]
    position = f"{now['epoch']}/{now['step']}"
    return [] if cursor.get("progress") == position else [Event("progress", now, "progress", position)]


def final_status(read: Read, cursor: Cursor) -> list[Event]:
    """succeeded / failed / cancelled, sent last: the stream ends after it."""
    if read.job.status not in FINAL or cursor.get("status") == read.job.status:
        return []
    return [status_event(read)]


SOURCES: tuple[Callable[[Read, Cursor], list[Event]], ...] = (active_status, epochs, findings, progress,
                                                               final_status)


def parse_cursor(last_event_id: str | None) -> Cursor:
    """A Last-Event-ID back into positions; anything unreadable starts from the beginning."""
    cursor: Cursor = {}
    for part in (last_event_id or "").split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            cursor[key.strip()] = value.strip()
    return cursor


def format_cursor(cursor: Cursor) -> str:
    return ";".join(f"{k}={v}" for k, v in cursor.items())


def poll(database_url: str, job_id: str, cursor: Cursor) -> tuple[list[tuple[Event, str]], bool]:
    """Events since `cursor` (advanced in place), each with its id; and whether the stream is over
    (a final status sent, or the job deleted)."""
    with get_engine(database_url).connect() as conn:
        if conn.dialect.name != "sqlite":   # reads only: no transaction round trips
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        job = conn.execute(JOB_ROW, {"job_id": job_id}).first()
        if job is None:
            return [], True
        read, out = Read(conn, job), []
        for source in SOURCES:
            for event in source(read, cursor):
                cursor[event.key] = event.position
                out.append((event, format_cursor(cursor)))
    return out, job.status in FINAL and cursor.get("status") == job.status


def owner_of(database_url: str, job_id: str) -> str | None:
    with get_engine(database_url).connect() as conn:
        return conn.execute(select(Job.owner_id).where(Job.id == job_id)).scalar()
