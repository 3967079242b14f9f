"""A job's way into the queue: the checks and the lock of submit, and dispatch (the one send path)."""
from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .. import quota, workers
from ..broker import TRAIN_TASK, send
from ..db import session_scope
from ..settings import Settings
from ..tables import ApiKey, Job, utcnow
from ..webhooks import outbox
from .status import ACTIVE, JobStatus

log = logging.getLogger("chainrule.lifecycle")

BROKER_BACKOFF_S = 10.0    # after a failed send, this process leaves sends to the reconciler this long


# ----------------------------------------------------------------------------- submit and dispatch
class ConcurrencyLimit(Exception):
    """The key already has `active` queued or running jobs, at or over its `limit`."""

    def __init__(self, active: int, limit: int):
        super().__init__(f"this key has {active} jobs queued or running; the limit is {limit}")
        self.active, self.limit = active, limit


class NoWorker(Exception):
    """No live worker consumes the job's queue, and settings.worker_wait_s is 0 (do not wait)."""

    def __init__(self, queue: str):
        super().__init__(f"no live worker consumes the {queue} queue (a {workers.WAITING_FOR[queue]}), so no one "
                         "would run this job")
        self.queue = queue


def lock_owner(session: Session, owner_id: str) -> None:
    """Serialize one key's submissions until the session's transaction ends, so that counting its
    active jobs and adding one is atomic. PostgreSQL: a row lock on the key's row (other keys go on
    in parallel). SQLite allows one writer at a time: a write as the transaction's first statement
    takes that lock at once (BEGIN IMMEDIATE's effect), where a read first would let two
    transactions count the same jobs before either writes."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(ApiKey).where(ApiKey.id == owner_id).values(prefix=ApiKey.prefix))
    else:
        session.execute(select(ApiKey.id).where(ApiKey.id == owner_id).with_for_update())


def add_queued(session: Session, settings: Settings, job: Job) -> Job:
    """Add a new job as queued to the session's transaction, under the lock on its key, if the key
    may have one more: raises ConcurrencyLimit when it already has settings.max_concurrent_jobs
    queued or running, quota.StorageFull when it has filled its storage quota, NoWorker when no
    live worker takes the job's queue and waiting is off. Every job, whoever creates it (a submit,
    a sweep's trials), is counted under the same lock. The caller commits, then dispatches; its
    transaction must not have read before (the lock must be its first statement, or follow a write)."""
    lock_owner(session, job.owner_id)
    active = session.scalar(select(func.count()).select_from(Job).where(
        Job.owner_id == job.owner_id, Job.status.in_(ACTIVE)))
    if active >= settings.max_concurrent_jobs:
        raise ConcurrencyLimit(active, settings.max_concurrent_jobs)
    quota.check(session, settings, job.owner_id)
    if job.queue not in workers.live_queues(session, settings):
        if settings.worker_wait_s <= 0:
            raise NoWorker(job.queue)
        job.waiting_since = utcnow()   # the reconciler clears it when a worker appears, or fails the job
    job.status = JobStatus.QUEUED
    session.add(job)
    return job


def submit(session: Session, settings: Settings, job: Job) -> Job:
    """Commit a new job as queued (add_queued's checks, which may raise), then send it: the worker
    must find the row the message names."""
    session.commit()    # end the caller's reads: the lock must be the transaction's first statement
    try:
        add_queued(session, settings, job)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    session.refresh(job)
    dispatch(settings, job.id, job.queue)
    return job


def reject(session: Session, job: Job, code: str, message: str) -> Job:
    """Add a job that can never run as failed, never queued nor sent; the caller commits it (with
    the sweep trial it belongs to)."""
    job.status, job.error_code, job.error_message, job.finished_at = JobStatus.FAILED, code, message, utcnow()
    session.add(job)
    session.flush()
    outbox.job_ended(session, None, job.id)   # sent at the reconciler's next pass
    return job


class _Breaker:
    """Per process: after a broker error, sends are skipped for BROKER_BACKOFF_S (the jobs stay
    queued and unsent; the reconciler sends them), so requests do not each wait out the timeout."""
    down_until: dict[str, float] = {}

    @classmethod
    def open(cls, url: str) -> bool:
        return time.monotonic() < cls.down_until.get(url, 0.0)

    @classmethod
    def trip(cls, url: str) -> None:
        cls.down_until[url] = time.monotonic() + BROKER_BACKOFF_S

    @classmethod
    def reset(cls, url: str) -> None:
        cls.down_until.pop(url, None)


def dispatch(settings: Settings, job_id: str, queue: str, *, sent_at: datetime | None = None) -> bool:
    """Hand a queued job to the broker once: True if this call sent it.

    `sent_at` is the send time this caller last saw (None: never sent). The compare-and-set
    on it makes exactly one of several concurrent dispatchers send; the others return False.
    """
    return send_once(settings, Job.id, job_id, queue, TRAIN_TASK, sent_at)


def send_once(settings: Settings, key: Any, row_id: str, queue: str, task: str, sent_at: datetime | None) -> bool:
    """dispatch's compare-and-set and send, for any table with status and sent_at whose primary key
    column is `key` (jobs; core.landscapes' analyses)."""
    if _Breaker.open(settings.broker_url):
        return False
    table, now = key.class_, utcnow()
    previous = table.sent_at.is_(None) if sent_at is None else (table.sent_at == sent_at)
    with session_scope(settings.database_url) as s:
        won = s.execute(update(table).where(key == row_id, table.status == JobStatus.QUEUED, previous)
                        .values(sent_at=now)).rowcount
    if not won:
        return False
    try:
        send(settings, row_id, queue, task)
    except Exception as exc:  # broker down: the row stays queued, unsent, for the reconciler
        _Breaker.trip(settings.broker_url)
        log.warning("could not send %s %s to queue %s (%s: %s); the reconciler will resend it",
                    task, row_id, queue, type(exc).__name__, exc)
        with session_scope(settings.database_url) as s:
            s.execute(update(table).where(key == row_id, table.status == JobStatus.QUEUED, table.sent_at == now)
                      .values(sent_at=None))
        return False
    _Breaker.reset(settings.broker_url)
    return True
