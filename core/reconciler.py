"""The reconciler: no job is left stuck, whatever dies. It brings the rows back in line with the
world (dead workers, lost messages, absent GPU workers, sweeps with free slots).

Every worker process and every API process runs `run_forever` in a daemon thread, so a pass
happens every `reconcile_interval_s` as long as any of them is alive. It only finds jobs; each
move is a core.lifecycle transition that re-checks the state it acts on, so several reconcilers
at once never double-act.

Rules (one pass):
  a) a queued job whose cancel was requested (a cancel that raced a send) -> cancelled;
  b) a running job whose heartbeat is older than heartbeat_timeout_s -> lifecycle.recover_lost
     (cancelled, requeued from its checkpoint, or failed as worker_lost);
  c) a queued job never handed to the broker (sent_at NULL and created more than UNSENT_GRACE_S
     ago: the submitter sends right after its commit) -> dispatched; a queued job sent before
     and still not started -> dispatched again after a back-off (`resend_interval`). Duplicate
     messages are harmless: the claim is atomic. A job waiting for a worker (rule d) is not sent
     again: its message waits in the broker for one;
  d) queued jobs whose queue no live worker consumes (core.workers) are marked waiting, unmarked
     when one appears, and failed as no_worker after worker_wait_s;
  e) hyperparameter sweeps (core.sweeps): a running one with a free slot and trials left gets its
     next trials, one whose trials have all ended is ended, and the still active trials of a
     cancelled one are stopped (core.sweeps.scheduler.advance_all);
  f) loss-landscape analyses: core.landscapes.reconcile (sent again, or failed with the reason);
  g) webhook deliveries that are due and not in a worker's hands -> sent to a worker (core.webhooks.delivery):
     the rows this pass's moves wrote, a retry whose backoff has passed, one whose worker died mid-send.
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from . import landscapes, lifecycle, workers
from .broker import QUEUES
from .db import session_scope
from .lifecycle import JobStatus
from .settings import Settings
from .sweeps import scheduler
from .tables import Job, as_utc, utcnow
from .webhooks import delivery as webhook_delivery, outbox

log = logging.getLogger("chainrule.reconciler")

UNSENT_GRACE_S = 2.0          # the submitter sends right after its commit; give it this long first
BATCH = 200                   # rows looked at per rule per pass


def resend_interval(settings: Settings, created_at: datetime, sent_at: datetime) -> float:
    """Seconds to wait after the last send before sending again: resend_after_s, growing with the
    time the job has already waited, so a job queued behind busy workers adds fewer duplicates to
    the broker; capped at max_resend_interval_s, since a message lost while the database or the
    broker was down is only replaced by a resend, and that must come soon after they are back."""
    waited = (as_utc(sent_at) - as_utc(created_at)).total_seconds()
    return max(settings.resend_after_s, min(waited, settings.max_resend_interval_s))


@dataclass
class PassSummary:
    sent: list[str] = field(default_factory=list)        # queued jobs handed (again) to the broker
    requeued: list[str] = field(default_factory=list)    # running jobs whose worker was lost, to retry
    failed: list[str] = field(default_factory=list)      # ran out of attempts, or waited for no worker
    cancelled: list[str] = field(default_factory=list)
    trials_made: list[str] = field(default_factory=list)     # sweep trials made (their job ids)
    trials_stopped: list[str] = field(default_factory=list)  # trials of cancelled sweeps stopped
    webhooks_sent: list[str] = field(default_factory=list)   # webhook deliveries handed to a worker

    def __bool__(self) -> bool:
        return any(self.__dict__.values())

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.__dict__.items() if v}


def _cancel_flagged_queued(settings: Settings, summary: PassSummary) -> None:
    with session_scope(settings.database_url) as s:
        ids = list(s.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED,
                                                  Job.cancel_requested.is_(True)).limit(BATCH)))
        summary.cancelled += [job_id for job_id in ids if lifecycle.cancel_queued(settings, s, job_id)]


def _recover_stale_running(settings: Settings, summary: PassSummary) -> None:
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


def _dispatch_unsent(settings: Settings, summary: PassSummary) -> None:
    now = utcnow()
    grace = now - timedelta(seconds=UNSENT_GRACE_S)
    resend = now - timedelta(seconds=settings.resend_after_s)
    with session_scope(settings.database_url) as s:
        rows = s.execute(
            select(Job.id, Job.queue, Job.created_at, Job.sent_at)
            .where(Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False),
                   or_(Job.sent_at.is_(None) & (Job.created_at < grace),
                       (Job.sent_at < resend) & Job.waiting_since.is_(None)))
            .order_by(Job.created_at).limit(BATCH)).all()
    for job_id, queue, created_at, sent_at in rows:
        if sent_at is not None:
            waited = (now - as_utc(sent_at)).total_seconds()
            if waited < resend_interval(settings, created_at, sent_at):
                continue
            log.info("job %s still queued %.0f s after its last send; sending it again", job_id, waited)
        if lifecycle.dispatch(settings, job_id, queue, sent_at=sent_at):
            summary.sent.append(job_id)


def no_worker_message(queue: str, waited_s: float) -> str:
    return (f"no live worker consumed the {queue} queue (a {workers.WAITING_FOR[queue]}) in the {waited_s:.0f} s "
            "this job waited (worker_wait_s); start one (GPU jobs: `chainrule worker --device cuda`) or submit "
            "with device auto or cpu")


def _watch_waiting(settings: Settings, summary: PassSummary) -> None:
    now = utcnow()
    queued = (Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
    with session_scope(settings.database_url) as s:
        live = workers.live_queues(s, settings, now)
        workers.forget_dead(s, now)
        for queue in QUEUES:
            mine = (*queued, Job.queue == queue)
            if queue in live:
                s.execute(update(Job).where(*mine, Job.waiting_since.is_not(None)).values(waiting_since=None))
                continue
            s.execute(update(Job).where(*mine, Job.waiting_since.is_(None)).values(waiting_since=now))
            given_up = now - timedelta(seconds=settings.worker_wait_s)
            failed = s.scalars(
                update(Job).where(*mine, Job.waiting_since < given_up)
                .values(status=JobStatus.FAILED, finished_at=now, error_code="no_worker",
                        error_message=no_worker_message(queue, settings.worker_wait_s))
                .returning(Job.id)).all()
            for job_id in failed:
                outbox.job_ended(s, None, job_id)    # sent by rule g, later in this pass
            summary.failed += failed


def reconcile(settings: Settings) -> PassSummary:
    """One pass over the rules; safe to run from any number of processes at once."""
    summary = PassSummary()
    _cancel_flagged_queued(settings, summary)
    _recover_stale_running(settings, summary)
    _watch_waiting(settings, summary)
    _dispatch_unsent(settings, summary)
    for name, job_ids in scheduler.advance_all(settings).items():
        getattr(summary, name).extend(job_ids)
    landscapes.reconcile(settings)
    summary.webhooks_sent += webhook_delivery.dispatch_due(settings)
    if summary:
        log.info("reconciled: %s", summary.counts())
    return summary


def run_forever(settings: Settings, stop_event: threading.Event, *, on_tick=None) -> None:
    """Reconcile every reconcile_interval_s (with a little jitter, so reconcilers spread out) until
    stop_event is set. A failing pass (database briefly down) is logged and retried."""
    while not stop_event.is_set():
        try:
            reconcile(settings)
        except Exception:
            log.exception("reconciling failed; retrying in %.1f s", settings.reconcile_interval_s)
        if on_tick is not None:
            try:
                on_tick()
            except Exception:
                log.exception("reconciler tick callback failed")
        stop_event.wait(settings.reconcile_interval_s * random.uniform(0.8, 1.2))


def start_thread(settings: Settings, *, on_tick=None) -> tuple[threading.Thread, threading.Event]:
    """Run the reconciler in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(settings, stop), kwargs={"on_tick": on_tick},
                              name="chainrule-reconciler", daemon=True)
    thread.start()
    return thread, stop
