"""A job's life on a worker: claim, the fence of its writes, heartbeats, finish, release on
shutdown, cancel, and the recovery of a job whose worker was lost."""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from sqlalchemy import update
from sqlalchemy.orm import Session

from .. import artifacts
from ..db import session_scope
from ..settings import Settings
from ..tables import Job, as_utc, utcnow
from ..webhooks import outbox
from .queueing import dispatch
from .status import FINAL, JobStatus

log = logging.getLogger("chainrule.lifecycle")


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
        if won:
            outbox.job_ended(s, settings, claim_.job_id)
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
                    outbox.job_ended(s, settings, job_id)
                    artifacts.remove_checkpoint(settings, job_id)   # of an earlier, lost attempt
                return


def cancel_queued(settings: Settings, session: Session, job_id: str) -> bool:
    """A queued job whose cancel was requested (a cancel that raced a send) -> cancelled."""
    changed = session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED,
                                                Job.cancel_requested.is_(True))
                              .values(status=JobStatus.CANCELLED, finished_at=utcnow())).rowcount
    if changed:
        outbox.job_ended(session, settings, job_id)
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
        if won and values["status"] != JobStatus.QUEUED:
            outbox.job_ended(s, settings, job.id)
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
