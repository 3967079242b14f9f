"""The job lifecycle: the statuses and every move between them, in one place.

    submit ─▶ queued ──claim──▶ running ──finish──▶ succeeded | failed | cancelled
                │ ▲               │
         cancel │ └──release──────┤  worker shutdown: back to the queue, no attempt spent
                ▼    requeue──────┤  lost worker, attempts left: resume from the checkpoint
            cancelled   fail_lost─┘  lost worker, no attempts left: failed (worker_lost)

    reject ─▶ failed                 a sweep's trial whose drawn point does not admit: never sent

The row is the job; a broker message is only a wake-up call carrying its id. Every move is
one conditional UPDATE that re-checks the state it starts from, so two processes acting on
one job at once never both win: the one whose UPDATE matches the row acts, the other sees
rowcount 0. A running job's writes are fenced on (id, running, attempt): a worker whose job
was taken from it can no longer touch the row, and learns so at its next heartbeat.

`dispatch` is the one way a job reaches the broker (after submit, release and requeue, and
for the reconciler's resends). It claims the send by a compare-and-set on `sent_at`, sends, and
on a broker error puts `sent_at` back, so the next sweep retries at once.

## The plan for a worker that dies mid-task
The database lease is the one recovery mechanism. A running job's worker refreshes
`heartbeat_at` every `heartbeat_interval_s`; the reconciler (core.reconciler, a thread in every API
and worker process) finds a running job whose heartbeat is older than `heartbeat_timeout_s`
and `recover_lost` requeues it from its last checkpoint (attempts < max_attempts) or fails it
as `worker_lost` with the host, the last heartbeat and the attempts in its message. This
works the same on every broker, including the embedded one, which has no redelivery at all.

Celery's redelivery is not part of the plan. `task_acks_late` stays on for another reason:
with early acks a solo worker busy with a long job would already hold the next message,
prefetched, which then waits behind that job while other workers idle. The unacked message
of a worker that died comes back from Redis only after the visibility timeout (hours), long
after the reconciler has dealt with the job, and its claim is then a no-op.
`task_reject_on_worker_lost` is off: it concerns prefork children, and our workers are solo.
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Callable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from . import artifacts, quota, workers
from .broker import TRAIN_TASK, send
from .db import session_scope
from .settings import Settings
from .tables import ApiKey, Job, as_utc, utcnow

log = logging.getLogger("chainrule.lifecycle")


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
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


# ----------------------------------------------------------------------------- the worker's side
@dataclass(frozen=True)
class Claim:
    """A job this worker runs as attempt `attempt`, on the device it asked for (auto | cpu | cuda)."""
    job_id: str
    attempt: int
    requested_device: str
    queue: str


def fenced(job_id: str, attempt: int) -> tuple:
    """The WHERE of every write a running attempt makes: still running, still this attempt."""
    return (Job.id == job_id, Job.status == JobStatus.RUNNING, Job.attempts == attempt)


def claim(settings: Settings, job_id: str, device_label: Callable[[str], str | None]) -> Claim | None:
    """queued -> running if the job is queued, not cancelled, and this worker can run it.

    device_label(requested device) names the device this worker would train it on, or None when
    it cannot (a cuda job on a cpu worker: left queued for a GPU worker). Of several workers
    holding a message for the job (duplicates, resends) exactly one wins.
    """
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        if job is None:
            log.warning("job %s: no such job (deleted, or a message for another database); skipping", job_id)
            return None
        if job.status != JobStatus.QUEUED:
            log.info("job %s is %s; this message is a duplicate or stale, skipping", job_id, job.status)
            return None
        if job.cancel_requested:
            cancel_queued(settings, s, job_id)
            return None
        label = device_label(job.device)
        if label is None:
            log.error("job %s asks for %s, which this worker cannot train on; leaving it queued. Do not "
                      "let CPU workers consume the gpu queue.", job_id, job.device)
            return None
        now = utcnow()
        attempt = s.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
            .values(status=JobStatus.RUNNING, attempts=Job.attempts + 1, started_at=job.started_at or now,
                    waiting_since=None,
                    heartbeat_at=now, worker_host=socket.gethostname()[:200], worker_device=label)
            .returning(Job.attempts)).scalar()
        requested, queue = job.device, job.queue
    if attempt is None:
        log.info("job %s was claimed by another worker first", job_id)
        return None
    log.info("job %s: claimed, attempt %d, on %s", job_id, attempt, label)
    return Claim(job_id, attempt, requested, queue)


def beat(settings: Settings, claim_: Claim, progress: dict[str, Any] | None = None) -> bool | None:
    """Refresh the heartbeat (and write `progress`): the job's cancel flag, or None when the job
    is no longer this attempt's (requeued by the reconciler, or ended)."""
    values: dict[str, Any] = {"heartbeat_at": utcnow(), **(progress or {})}
    with session_scope(settings.database_url) as s:
        row = s.execute(update(Job).where(*fenced(claim_.job_id, claim_.attempt)).values(**values)
                        .returning(Job.cancel_requested)).first()
    return None if row is None else bool(row[0])


def finish(settings: Settings, claim_: Claim, status: JobStatus, **values: Any) -> bool:
    """running -> a final status, with the outcome's columns; False if the job was not ours any more."""
    if status not in FINAL:
        raise ValueError(f"finish takes a final status ({', '.join(FINAL)}), got {status!r}")
    now = utcnow()
    with session_scope(settings.database_url) as s:
        won = s.execute(update(Job).where(*fenced(claim_.job_id, claim_.attempt))
                        .values(status=status, finished_at=now, heartbeat_at=now, **values)).rowcount
    if not won:
        log.warning("job %s: not running as attempt %d any more; outcome %r discarded",
                    claim_.job_id, claim_.attempt, str(status))
    else:
        artifacts.remove_checkpoint(settings, claim_.job_id)
    return bool(won)


def release(settings: Settings, claim_: Claim) -> JobStatus | None:
    """Worker shutdown mid-job: running -> queued without spending an attempt, and sent again at
    once, to resume from the last checkpoint on whichever worker takes it. A job whose cancel
    was requested meanwhile ends cancelled instead. None: the job was not ours any more."""
    with session_scope(settings.database_url) as s:
        won = s.execute(update(Job).where(*fenced(claim_.job_id, claim_.attempt), Job.cancel_requested.is_(False))
                        .values(status=JobStatus.QUEUED, attempts=Job.attempts - 1, sent_at=None)).rowcount
    if not won:
        return JobStatus.CANCELLED if finish(settings, claim_, JobStatus.CANCELLED) else None
    log.info("job %s: worker shutting down; job back in queue %s", claim_.job_id, claim_.queue)
    dispatch(settings, claim_.job_id, claim_.queue)
    return JobStatus.QUEUED


# ----------------------------------------------------------------------------- cancel
def cancel(settings: Settings, job_id: str) -> None:
    """queued -> cancelled at once; running -> flagged (the worker stops at its next poll and
    finishes it cancelled); final -> unchanged. Idempotent."""
    with session_scope(settings.database_url) as s:
        for _ in range(3):   # the worker may move the job between our read and our write
            status = s.get(Job, job_id, populate_existing=True).status
            if status == JobStatus.QUEUED:
                changed = s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                                    .values(status=JobStatus.CANCELLED, cancel_requested=True,
                                            finished_at=utcnow())).rowcount
            elif status == JobStatus.RUNNING:
                changed = s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                                    .values(cancel_requested=True)).rowcount
            else:
                return
            if changed:
                if status == JobStatus.QUEUED:
                    artifacts.remove_checkpoint(settings, job_id)   # of an earlier, lost attempt
                return


def cancel_queued(settings: Settings, session: Session, job_id: str) -> bool:
    """A queued job whose cancel was requested (a cancel that raced a send) -> cancelled."""
    changed = session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED,
                                                Job.cancel_requested.is_(True))
                              .values(status=JobStatus.CANCELLED, finished_at=utcnow())).rowcount
    if changed:
        log.info("job %s was cancelled while queued", job_id)
        artifacts.remove_checkpoint(settings, job_id)
    return bool(changed)


# ----------------------------------------------------------------------------- a lost worker
def lost_worker_message(job: Job, last_heartbeat: datetime | None) -> str:
    beat_at = "never" if last_heartbeat is None else f"{last_heartbeat:%Y-%m-%d %H:%M:%S} UTC"
    tries = f"{job.attempts} attempt" + ("" if job.attempts == 1 else "s")
    return (f"the worker running this job (host {job.worker_host or 'unknown'}) stopped responding; "
            f"last heartbeat at {beat_at}; gave up after {tries} (max_attempts={job.max_attempts}). "
            "A worker that dies on the same job each time is often out of memory: try a smaller "
            "batch_size or model, then submit the job again.")


def _requeue_values(job: Job, beat_at: datetime | None, now: datetime) -> dict[str, Any]:
    retries = list((job.result or {}).get("retries", []))
    retries.append({"attempt": job.attempts, "worker_host": job.worker_host, "worker_device": job.worker_device,
                    "last_heartbeat_at": beat_at.isoformat() if beat_at else None,
                    "requeued_at": now.isoformat(), "epoch": job.epoch})
    note = (f"attempt {job.attempts} on host {job.worker_host or 'unknown'} stopped responding "
            f"(last heartbeat {beat_at:%H:%M:%S} UTC); requeued to resume from its last checkpoint"
            if beat_at else f"attempt {job.attempts} stopped responding; requeued")
    return {"status": JobStatus.QUEUED, "sent_at": None, "result": {"note": note, "retries": retries}}


def recover_lost(settings: Settings, job: Job, stale: Any) -> JobStatus | None:
    """A running job whose heartbeat is stale (`stale`: the SQL condition the reconciler found it by):
    cancelled if a cancel was requested, else requeued while attempts are left, else failed as
    worker_lost. None when the worker came back or another reconciler acted first."""
    now, beat_at = utcnow(), as_utc(job.heartbeat_at)
    if job.cancel_requested:
        values: dict[str, Any] = {"status": JobStatus.CANCELLED, "finished_at": now}
    elif job.attempts < job.max_attempts:
        values = _requeue_values(job, beat_at, now)
    else:
        values = {"status": JobStatus.FAILED, "finished_at": now, "error_code": "worker_lost",
                  "error_message": lost_worker_message(job, beat_at)}
    with session_scope(settings.database_url) as s:
        won = s.execute(update(Job).where(*fenced(job.id, job.attempts), stale).values(**values)).rowcount
    if not won:
        return None
    if values["status"] == JobStatus.QUEUED:
        log.warning("job %s: %s", job.id, values["result"]["note"])
        dispatch(settings, job.id, job.queue)
        return values["status"]
    if values["status"] == JobStatus.FAILED:
        log.warning("job %s failed: %s", job.id, values["error_message"])
    artifacts.remove_checkpoint(settings, job.id)
    return values["status"]
