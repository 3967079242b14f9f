"""Which workers are alive, and what they consume: a row per worker process, written by its reconciler
thread every pass and deleted when it stops.

Why rows and not Celery's own inspection (`inspect().active_queues()`): a solo-pool worker answers
broadcasts only between jobs, so one busy with a long job would look absent; the embedded
filesystem transport has no broadcast at all; and the rows are read in the same database
transaction as everything else a submit checks. A worker is live while its row was seen within
`live_within_s`; its reconciler thread keeps beating through a long job.

A queued job whose queue no live worker consumes is marked `waiting_since` (shown as waiting_for:
"gpu worker"); the reconciler clears the mark when such a worker appears, and fails the job as
`no_worker` once it has waited worker_wait_s. With worker_wait_s = 0 the submit is refused.
"""
from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .broker import RANKS_QUEUE
from .db import session_scope
from .settings import Settings
from .tables import Worker, utcnow

FORGET_AFTER_S = 24 * 3600      # a row unseen this long (a worker killed without its shutdown) is deleted
WAITING_FOR = {"gpu": "gpu worker", "cpu": "cpu worker", "auto": "worker"}


def live_within_s(settings: Settings) -> float:
    return max(settings.heartbeat_timeout_s, 3 * settings.reconcile_interval_s)


def this_worker_id() -> str:
    return f"{socket.gethostname()[:150]}:{os.getpid()}"


def beat(settings: Settings, queues: list[str], device: str) -> None:
    """This worker is alive now and consumes `queues`, training on `device`."""
    worker_id, now = this_worker_id(), utcnow()
    with session_scope(settings.database_url) as s:
        seen = s.execute(update(Worker).where(Worker.id == worker_id)
                         .values(seen_at=now, queues=queues, device=device)).rowcount
        if not seen:
            from .rank_slots import this_host   # rank_slots -> lifecycle -> ... -> workers
            s.add(Worker(id=worker_id, host=this_host(settings), pid=os.getpid(), queues=queues,
                         device=device, started_at=now, seen_at=now))


def forget(settings: Settings) -> None:
    """This worker is stopping: its queues are no longer served by it."""
    with session_scope(settings.database_url) as s:
        s.execute(delete(Worker).where(Worker.id == this_worker_id()))


def live_queues(session: Session, settings: Settings, now: datetime | None = None) -> set[str]:
    """The queues some live worker consumes."""
    since = (now or utcnow()) - timedelta(seconds=live_within_s(settings))
    return {q for queues in session.scalars(select(Worker.queues).where(Worker.seen_at >= since)) for q in queues}


def take_ranks_elsewhere(settings: Settings, host: str) -> bool:
    """Whether a live worker on a host other than `host` consumes the ranks queue (core.broker.RANKS_QUEUE):
    only then does a multi-process job start with part of its ranks here (worker.ranks)."""
    since = utcnow() - timedelta(seconds=live_within_s(settings))
    with session_scope(settings.database_url) as s:
        return any(RANKS_QUEUE in queues for queues in s.scalars(
            select(Worker.queues).where(Worker.seen_at >= since, Worker.host != host)))


def forget_dead(session: Session, now: datetime) -> None:
    session.execute(delete(Worker).where(Worker.seen_at < now - timedelta(seconds=FORGET_AFTER_S)))
