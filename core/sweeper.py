"""The sweeper: no job is left stuck, whatever dies.

Every worker process and every API process runs `run_forever` in a daemon thread, so a sweep
happens every `sweep_interval_s` as long as any of them is alive. It only finds jobs; each
move is a core.lifecycle transition that re-checks the state it acts on, so several sweepers
at once never double-act.

Rules (one sweep):
  a) a queued job whose cancel was requested (a cancel that raced a send) -> cancelled;
  b) a running job whose heartbeat is older than heartbeat_timeout_s -> lifecycle.recover_lost
     (cancelled, requeued from its checkpoint, or failed as worker_lost);
  c) a queued job never handed to the broker (sent_at NULL and created more than UNSENT_GRACE_S
     ago: the submitter sends right after its commit) -> dispatched; a queued job sent before
     and still not started -> dispatched again after a back-off (`resend_interval`). Duplicate
     messages are harmless: the claim is atomic;
  d) hyperparameter sweeps (core.sweeps, not to be confused with this pass): a running one with a
     free slot and trials left gets its next trials, one whose trials have all ended is ended,
     and the still active trials of a cancelled one are stopped (core.sweeps.scheduler.advance_all).
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from . import lifecycle
from .db import session_scope
from .lifecycle import JobStatus
from .settings import Settings
from .sweeps import scheduler
from .tables import Job, as_utc, utcnow

log = logging.getLogger("chainrule.sweeper")

UNSENT_GRACE_S = 2.0          # the submitter sends right after its commit; give it this long first
MAX_RESEND_INTERVAL_S = 3600  # back-off cap for a job that waits long for a free worker
BATCH = 200                   # rows looked at per rule per sweep


def resend_interval(settings: Settings, created_at: datetime, sent_at: datetime) -> float:
    """Seconds to wait after the last send before sending again: resend_after_s, growing with the
    time the job has already waited (capped), so a job queued behind busy workers adds
    log(wait) duplicates to the broker rather than one every resend_after_s."""
    waited = (as_utc(sent_at) - as_utc(created_at)).total_seconds()
    return max(settings.resend_after_s, min(waited, MAX_RESEND_INTERVAL_S))


@dataclass
class SweepSummary:
    sent: list[str] = field(default_factory=list)        # queued jobs handed (again) to the broker
    requeued: list[str] = field(default_factory=list)    # running jobs whose worker was lost, to retry
    failed: list[str] = field(default_factory=list)      # running jobs that ran out of attempts
    cancelled: list[str] = field(default_factory=list)
    trials_made: list[str] = field(default_factory=list)     # sweep trials made (their job ids)
    trials_stopped: list[str] = field(default_factory=list)  # trials of cancelled sweeps stopped

    def __bool__(self) -> bool:
        return any(self.__dict__.values())

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.__dict__.items() if v}


def _cancel_flagged_queued(settings: Settings, summary: SweepSummary) -> None:
    with session_scope(settings.database_url) as s:
        ids = list(s.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED,
                                                  Job.cancel_requested.is_(True)).limit(BATCH)))
        summary.cancelled += [job_id for job_id in ids if lifecycle.cancel_queued(s, job_id)]


def _recover_stale_running(settings: Settings, summary: SweepSummary) -> None:
    cutoff = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    stale = or_(Job.heartbeat_at < cutoff, Job.heartbeat_at.is_(None) & (Job.started_at < cutoff))
    with session_scope(settings.database_url) as s:
        jobs = list(s.scalars(select(Job).where(Job.status == JobStatus.RUNNING, stale).limit(BATCH)))
    outcomes = {JobStatus.CANCELLED: summary.cancelled, JobStatus.QUEUED: summary.requeued,
                JobStatus.FAILED: summary.failed}
    for job in jobs:
        status = lifecycle.recover_lost(settings, job, stale)
        if status is not None:
            outcomes[status].append(job.id)


def _dispatch_unsent(settings: Settings, summary: SweepSummary) -> None:
    now = utcnow()
    grace = now - timedelta(seconds=UNSENT_GRACE_S)
    resend = now - timedelta(seconds=settings.resend_after_s)
    with session_scope(settings.database_url) as s:
        rows = s.execute(
            select(Job.id, Job.queue, Job.created_at, Job.sent_at)
            .where(Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False),
                   or_(Job.sent_at.is_(None) & (Job.created_at < grace), Job.sent_at < resend))
            .order_by(Job.created_at).limit(BATCH)).all()
    for job_id, queue, created_at, sent_at in rows:
        if sent_at is not None:
            waited = (now - as_utc(sent_at)).total_seconds()
            if waited < resend_interval(settings, created_at, sent_at):
                continue
            log.info("job %s still queued %.0f s after its last send; sending it again", job_id, waited)
        if lifecycle.dispatch(settings, job_id, queue, sent_at=sent_at):
            summary.sent.append(job_id)


def sweep(settings: Settings) -> SweepSummary:
    """One pass over the rules; safe to run from any number of processes at once."""
    summary = SweepSummary()
    _cancel_flagged_queued(settings, summary)
    _recover_stale_running(settings, summary)
    _dispatch_unsent(settings, summary)
    for name, job_ids in scheduler.advance_all(settings).items():
        getattr(summary, name).extend(job_ids)
    if summary:
        log.info("sweep: %s", summary.counts())
    return summary


def run_forever(settings: Settings, stop_event: threading.Event, *, on_tick=None) -> None:
    """Sweep every sweep_interval_s (with a little jitter, so sweepers spread out) until
    stop_event is set. A failing sweep (database briefly down) is logged and retried."""
    while not stop_event.is_set():
        try:
            sweep(settings)
        except Exception:
            log.exception("sweep failed; retrying in %.1f s", settings.sweep_interval_s)
        if on_tick is not None:
            try:
                on_tick()
            except Exception:
                log.exception("sweeper tick callback failed")
        stop_event.wait(settings.sweep_interval_s * random.uniform(0.8, 1.2))


def start_thread(settings: Settings, *, on_tick=None) -> tuple[threading.Thread, threading.Event]:
    """Run the sweeper in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(settings, stop), kwargs={"on_tick": on_tick},
                              name="chainrule-sweeper", daemon=True)
    thread.start()
    return thread, stop
