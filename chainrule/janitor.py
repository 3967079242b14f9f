"""The janitor: no job is left stuck, whatever dies.

Every worker process and the API process run `run_forever` in a daemon thread, so a sweep
happens every `janitor_interval_s` as long as any of them is alive. Each action is a
conditional UPDATE that re-checks the state it acts on, so several janitors sweeping at
once never double-act: the one whose UPDATE matches a row acts, the others see rowcount 0.

Rules (one sweep):
  a) queued job never handed to the broker (sent_at NULL, created more than
     UNSENT_GRACE_S ago: the API commits first and sends right after) -> send it.
     A queued job sent before and still not started is sent again after a back-off
     (see `resend_interval`); duplicates are no-ops because the worker claims atomically.
  b) queued job with cancel_requested -> cancelled (a cancel that raced a send).
  c) running job whose heartbeat is older than heartbeat_timeout_s:
       cancel_requested             -> cancelled
       attempts < max_attempts      -> queued again (a note in `result["retries"]`) and sent;
                                       the next worker resumes from the last checkpoint
       otherwise                    -> failed, error_code "worker_lost", with a message naming
                                       the host, the last heartbeat and the attempts
Sends happen after the UPDATE commits, as everywhere else.
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import or_, select, update

from .db import session_scope
from .models import Job, utcnow
from .queue import enqueue
from .settings import Settings

log = logging.getLogger("chainrule.janitor")

UNSENT_GRACE_S = 2.0          # the API sends right after its commit; give it this long first
MAX_RESEND_INTERVAL_S = 3600  # back-off cap for a job that waits long for a free worker
BATCH = 200                   # rows looked at per rule per sweep


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def resend_interval(settings: Settings, created_at: datetime, sent_at: datetime) -> float:
    """Seconds to wait after the last send before sending again: resend_after_s, doubling with
    the time the job has already waited (capped), so a job queued behind busy workers adds
    log(wait) duplicates to the broker rather than one every resend_after_s."""
    waited = (as_utc(sent_at) - as_utc(created_at)).total_seconds()
    return max(settings.resend_after_s, min(waited, MAX_RESEND_INTERVAL_S))


@dataclass
class SweepSummary:
    sent: list[str] = field(default_factory=list)        # queued jobs handed (again) to the broker
    requeued: list[str] = field(default_factory=list)    # running jobs whose worker was lost, to retry
    failed: list[str] = field(default_factory=list)      # running jobs that ran out of attempts
    cancelled: list[str] = field(default_factory=list)
    send_errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any((self.sent, self.requeued, self.failed, self.cancelled, self.send_errors))

    def as_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items()}


def _send(settings: Settings, job_id: str, queue: str, sent_at: datetime, summary: SweepSummary) -> None:
    """Enqueue after the commit that set sent_at; on a broker error, clear sent_at again
    (only if still ours) so the next sweep retries at once instead of after a back-off."""
    try:
        enqueue(settings, job_id, queue)
        summary.sent.append(job_id)
    except Exception as exc:  # broker down: the job stays queued, we retry next sweep
        log.warning("could not send job %s to queue %s: %s: %s", job_id, queue, type(exc).__name__, exc)
        summary.send_errors.append(job_id)
        with session_scope(settings.database_url) as s:
            s.execute(update(Job).where(Job.id == job_id, Job.status == "queued", Job.sent_at == sent_at)
                      .values(sent_at=None))


def _sweep_cancelled_queued(settings: Settings, now: datetime, summary: SweepSummary) -> None:
    with session_scope(settings.database_url) as s:
        ids = list(s.scalars(select(Job.id).where(Job.status == "queued", Job.cancel_requested.is_(True))
                             .limit(BATCH)))
        for job_id in ids:
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued",
                                              Job.cancel_requested.is_(True))
                            .values(status="cancelled", finished_at=now))
            if res.rowcount:
                summary.cancelled.append(job_id)


def _sweep_unsent(settings: Settings, now: datetime, summary: SweepSummary) -> None:
    grace = now - timedelta(seconds=UNSENT_GRACE_S)
    resend = now - timedelta(seconds=settings.resend_after_s)
    with session_scope(settings.database_url) as s:
        rows = s.execute(
            select(Job.id, Job.queue, Job.created_at, Job.sent_at)
            .where(Job.status == "queued", Job.cancel_requested.is_(False),
                   or_(Job.sent_at.is_(None) & (Job.created_at < grace), Job.sent_at < resend))
            .order_by(Job.created_at).limit(BATCH)).all()
    for job_id, queue, created_at, sent_at in rows:
        if sent_at is not None and \
                (now - as_utc(sent_at)).total_seconds() < resend_interval(settings, created_at, sent_at):
            continue
        # compare-and-set on sent_at: of several janitors, exactly one wins each send
        prev = Job.sent_at.is_(None) if sent_at is None else (Job.sent_at == sent_at)
        with session_scope(settings.database_url) as s:
            won = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued", prev)
                            .values(sent_at=now)).rowcount
        if won:
            if sent_at is not None:
                log.info("job %s still queued %.0f s after its last send; sending it again",
                         job_id, (now - as_utc(sent_at)).total_seconds())
            _send(settings, job_id, queue, now, summary)


def lost_worker_message(job: Any, last_heartbeat: datetime | None) -> str:
    beat = "never" if last_heartbeat is None else f"{last_heartbeat:%Y-%m-%d %H:%M:%S} UTC"
    tries = f"{job.attempts} attempt" + ("" if job.attempts == 1 else "s")
    return (f"the worker running this job (host {job.worker_host or 'unknown'}) stopped responding; "
            f"last heartbeat at {beat}; gave up after {tries} (max_attempts={job.max_attempts}). "
            "A worker that dies on the same job each time is often out of memory: try a smaller "
            "batch_size or model, then submit the job again.")


def _sweep_stale_running(settings: Settings, now: datetime, summary: SweepSummary) -> None:
    cutoff = now - timedelta(seconds=settings.heartbeat_timeout_s)
    stale = or_(Job.heartbeat_at < cutoff, Job.heartbeat_at.is_(None) & (Job.started_at < cutoff))
    with session_scope(settings.database_url) as s:
        jobs = list(s.scalars(select(Job).where(Job.status == "running", stale).limit(BATCH)))
    for job in jobs:
        beat = as_utc(job.heartbeat_at)
        # the WHERE re-checks "still running, still stale": a worker that came back, or another
        # janitor that acted first, makes this a no-op
        still = (Job.id == job.id, Job.status == "running", Job.attempts == job.attempts, stale)
        if job.cancel_requested:
            values: dict[str, Any] = {"status": "cancelled", "finished_at": now}
            outcome = summary.cancelled
        elif job.attempts < job.max_attempts:
            retries = list((job.result or {}).get("retries", []))
            retries.append({"attempt": job.attempts, "worker_host": job.worker_host,
                            "worker_device": job.worker_device,
                            "last_heartbeat_at": beat.isoformat() if beat else None,
                            "requeued_at": now.isoformat(), "epoch": job.epoch})
            note = (f"attempt {job.attempts} on host {job.worker_host or 'unknown'} stopped responding "
                    f"(last heartbeat {beat:%H:%M:%S} UTC); requeued to resume from its last checkpoint"
                    if beat else f"attempt {job.attempts} stopped responding; requeued")
            values = {"status": "queued", "sent_at": now, "result": {"note": note, "retries": retries}}
            outcome = summary.requeued
        else:
            values = {"status": "failed", "finished_at": now, "error_code": "worker_lost",
                      "error_message": lost_worker_message(job, beat)}
            outcome = summary.failed
        with session_scope(settings.database_url) as s:
            won = s.execute(update(Job).where(*still).values(**values)).rowcount
        if not won:
            continue
        outcome.append(job.id)
        if values["status"] == "queued":
            log.warning("job %s: %s", job.id, values["result"]["note"])
            _send(settings, job.id, job.queue, now, SweepSummary())
        elif values["status"] == "failed":
            log.warning("job %s failed: %s", job.id, values["error_message"])


def sweep(settings: Settings) -> SweepSummary:
    """One pass over the three rules; safe to run from any number of processes at once."""
    summary = SweepSummary()
    now = utcnow()
    _sweep_cancelled_queued(settings, now, summary)
    _sweep_stale_running(settings, now, summary)
    _sweep_unsent(settings, utcnow(), summary)
    if summary:
        log.info("janitor sweep: %s", {k: len(v) for k, v in summary.as_dict().items() if v})
    return summary


def run_forever(settings: Settings, stop_event: threading.Event, *, on_tick=None) -> None:
    """Sweep every janitor_interval_s (with a little jitter, so janitors spread out) until
    stop_event is set. A failing sweep (database briefly down) is logged and retried."""
    while not stop_event.is_set():
        try:
            sweep(settings)
        except Exception:
            log.exception("janitor sweep failed; retrying in %.1f s", settings.janitor_interval_s)
        if on_tick is not None:
            try:
                on_tick()
            except Exception:
                log.exception("janitor tick callback failed")
        stop_event.wait(settings.janitor_interval_s * random.uniform(0.8, 1.2))


def start_thread(settings: Settings, *, on_tick=None) -> tuple[threading.Thread, threading.Event]:
    """Run the janitor in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(settings, stop), kwargs={"on_tick": on_tick},
                              name="chainrule-janitor", daemon=True)
    thread.start()
    return thread, stop
