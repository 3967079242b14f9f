"""A job's loss-landscape analysis (POST /v1/jobs/{id}/landscape): its statuses and every move, as
core.lifecycle does for jobs, on the `landscapes` table (one row per job).

    request ─▶ queued ──claim──▶ running ──finish──▶ succeeded | failed | cancelled
                 │                  │
          cancel ▼                  └── stale heartbeat (the reconciler): failed, worker_lost
             cancelled

The row is the analysis; a broker message (LANDSCAPE_TASK with the job id, on the job's queue) only
wakes a worker. Every move is one conditional UPDATE that re-checks the state it starts from. A
running analysis's writes are fenced on (job id, running, attempt); `attempts` counts every start
of every request of the job, so a worker given up on can never write into a later request's run.
An analysis whose worker died is failed with the reason, not retried: it is a few minutes of
worker time that its user can ask for again, where a training job is hours. The reconciler
(core.reconciler) calls `sweep`: a queued analysis never sent, or sent long ago, is sent again; one no
live worker can take fails after worker_wait_s; a running one with a stale heartbeat fails.
"""
from __future__ import annotations

import logging
import socket
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from . import workers
from .broker import LANDSCAPE_TASK
from .db import session_scope
from .lifecycle import ACTIVE, JobStatus, lock_owner, send_once
from .settings import Settings
from .tables import Job, Landscape, utcnow

log = logging.getLogger("chainrule.landscapes")
UNSENT_GRACE_S = 2.0


class Busy(Exception):
    """The job already has a queued or running analysis."""


class TooMany(Exception):
    """The key already has max_active_landscapes_per_key analyses queued or running."""


def request(session: Session, settings: Settings, job: Job, options: dict[str, Any]) -> Landscape:
    """Commit the job's analysis as queued (a finished one is replaced), then send it."""
    session.commit()
    lock_owner(session, job.owner_id)        # counting a key's active analyses and adding one is atomic
    row = session.get(Landscape, job.id, populate_existing=True)
    if row is not None and row.status in ACTIVE:
        session.rollback()
        raise Busy(f"job {job.id!r} already has a landscape {row.status}")
    active = session.scalar(select(func.count()).select_from(Landscape).where(
        Landscape.owner_id == job.owner_id, Landscape.status.in_(ACTIVE)))
    if active >= settings.max_active_landscapes_per_key:
        session.rollback()
        raise TooMany(f"this key has {active} landscapes queued or running; the limit is "
                      f"{settings.max_active_landscapes_per_key} (max_active_landscapes_per_key)")
    fresh = {"status": JobStatus.QUEUED, "options": options, "queue": job.queue, "cancel_requested": False,
             "fraction": 0.0, "result": None, "error_code": None, "error_message": None, "worker_host": None,
             "created_at": utcnow(), "sent_at": None, "started_at": None, "finished_at": None,
             "heartbeat_at": None}
    if row is None:
        row = Landscape(job_id=job.id, owner_id=job.owner_id, attempts=0, **fresh)
        session.add(row)
    else:
        for name, value in fresh.items():
            setattr(row, name, value)
    session.commit()
    dispatch(settings, job.id, row.queue)
    session.refresh(row)
    return row


def dispatch(settings: Settings, job_id: str, queue: str, sent_at=None) -> bool:
    return send_once(settings, Landscape.job_id, job_id, queue, LANDSCAPE_TASK, sent_at)


def fenced(job_id: str, attempt: int) -> tuple:
    return (Landscape.job_id == job_id, Landscape.status == JobStatus.RUNNING, Landscape.attempts == attempt)


def claim(settings: Settings, job_id: str) -> int | None:
    """queued -> running: this start's attempt number, or None (not queued, or another worker won)."""
    with session_scope(settings.database_url) as s:
        queued = (Landscape.job_id == job_id, Landscape.status == JobStatus.QUEUED)
        s.execute(update(Landscape).where(*queued, Landscape.cancel_requested.is_(True))
                  .values(status=JobStatus.CANCELLED, finished_at=utcnow()))
        now = utcnow()
        return s.execute(update(Landscape).where(*queued).values(
            status=JobStatus.RUNNING, attempts=Landscape.attempts + 1, started_at=now, heartbeat_at=now,
            worker_host=socket.gethostname()[:200]).returning(Landscape.attempts)).scalar()


def beat(settings: Settings, job_id: str, attempt: int, fraction: float) -> bool | None:
    """Heartbeat and progress: the cancel flag, or None when the analysis is not this attempt's any more."""
    with session_scope(settings.database_url) as s:
        row = s.execute(update(Landscape).where(*fenced(job_id, attempt))
                        .values(heartbeat_at=utcnow(), fraction=min(max(fraction, 0.0), 1.0))
                        .returning(Landscape.cancel_requested)).first()
    return None if row is None else bool(row[0])


def finish(settings: Settings, job_id: str, attempt: int, status: JobStatus, **values: Any) -> bool:
    now = utcnow()
    with session_scope(settings.database_url) as s:
        return bool(s.execute(update(Landscape).where(*fenced(job_id, attempt))
                              .values(status=status, finished_at=now, heartbeat_at=now, **values)).rowcount)


def cancel(settings: Settings, job_id: str) -> None:
    """queued -> cancelled at once; running -> flagged (the worker stops at its next beat); else unchanged."""
    with session_scope(settings.database_url) as s:
        s.execute(update(Landscape).where(Landscape.job_id == job_id, Landscape.status == JobStatus.QUEUED)
                  .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=utcnow()))
        s.execute(update(Landscape).where(Landscape.job_id == job_id, Landscape.status == JobStatus.RUNNING)
                  .values(cancel_requested=True))


def reconcile(settings: Settings) -> list[str]:
    """One pass of the reconciler's rules for analyses; the job ids of those it moved or sent."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.heartbeat_timeout_s)
    moved: list[str] = []
    with session_scope(settings.database_url) as s:
        running = (Landscape.status == JobStatus.RUNNING, Landscape.heartbeat_at < stale)
        moved += s.scalars(update(Landscape).where(*running, Landscape.cancel_requested.is_(True))
                           .values(status=JobStatus.CANCELLED, finished_at=now).returning(Landscape.job_id)).all()
        moved += s.scalars(update(Landscape).where(*running).values(
            status=JobStatus.FAILED, finished_at=now, error_code="worker_lost",
            error_message=f"the worker computing this landscape stopped responding for over "
                          f"{settings.heartbeat_timeout_s:.0f} s; request it again").returning(Landscape.job_id)).all()
        live = workers.live_queues(s, settings, now)
        waited = now - timedelta(seconds=settings.worker_wait_s)
        moved += s.scalars(update(Landscape).where(
            Landscape.status == JobStatus.QUEUED, Landscape.queue.not_in(live), Landscape.created_at < waited)
            .values(status=JobStatus.FAILED, finished_at=now, error_code="no_worker",
                    error_message=f"no live worker consumed its queue in {settings.worker_wait_s:.0f} s "
                                  "(worker_wait_s)").returning(Landscape.job_id)).all()
        unsent = s.execute(select(Landscape.job_id, Landscape.queue, Landscape.sent_at).where(
            Landscape.status == JobStatus.QUEUED, or_(
                Landscape.sent_at.is_(None) & (Landscape.created_at < now - timedelta(seconds=UNSENT_GRACE_S)),
                Landscape.sent_at < now - timedelta(seconds=settings.max_resend_interval_s)))).all()
    moved += [job_id for job_id, queue, sent_at in unsent if dispatch(settings, job_id, queue, sent_at)]
    if moved:
        log.info("landscape sweep: moved or sent %s", moved)
    return moved
