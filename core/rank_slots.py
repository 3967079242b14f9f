"""Rank slots: how many rank processes of multi-process jobs a worker host runs at once.

Each host has `settings.rank_slots` rows. A worker that claims a job of N processes reserves N of its
host's slots in ONE transaction, or none: two jobs that each hold part of what they need (and wait for
the rest) can never happen. Each slot is taken by compare-and-swap on what was read (free, or held by
an attempt that is no longer running), so two workers reserving at once cannot both win a slot, on
SQLite or PostgreSQL. Slots are freed when the ranks end; a worker that dies leaves its slots held by
an attempt that is not running any more, which the next reservation treats as free.
"""
from __future__ import annotations

import socket

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from .db import session_scope
from .lifecycle import JobStatus
from .settings import Settings
from .tables import Job, RankSlot, utcnow


def this_host(settings: Settings | None = None) -> str:
    """The host whose slots this worker uses: settings.rank_host, else the machine's name."""
    return (settings is not None and settings.rank_host) or socket.gethostname()[:200]


def _ensure_rows(settings: Settings, host: str) -> None:
    with session_scope(settings.database_url) as s:
        have = set(s.scalars(select(RankSlot.slot).where(RankSlot.host == host)))
        s.add_all(RankSlot(host=host, slot=i) for i in range(settings.rank_slots) if i not in have)
    # the rows are never deleted: a later, smaller rank_slots only leaves the higher ones unused


def reserve(settings: Settings, job_id: str, attempt: int, n: int, host: str | None = None,
            at_least: int | None = None) -> list[int] | None:
    """n slots of `host` for this attempt of job_id (their numbers), or None (nothing reserved). With
    `at_least`: as many of the n as are free, if that is at least `at_least` (still in one transaction)."""
    host = host or this_host(settings)
    at_least = n if at_least is None else at_least
    if at_least > settings.rank_slots:
        return None
    try:
        _ensure_rows(settings, host)
    except IntegrityError:     # another worker of this host made them at the same moment
        pass
    with session_scope(settings.database_url) as s:
        running = select(Job.id).where(Job.id == RankSlot.job_id, Job.attempts == RankSlot.attempt,
                                       Job.status == JobStatus.RUNNING).exists()
        rows = s.execute(select(RankSlot.slot, RankSlot.job_id, RankSlot.attempt)
                         .where(RankSlot.host == host, RankSlot.slot < settings.rank_slots,
                                or_(RankSlot.job_id.is_(None), ~running))
                         .order_by(RankSlot.slot).limit(n)).all()
        if len(rows) < at_least:
            return None
        now = utcnow()
        for slot, held_by, held_attempt in rows:
            was = RankSlot.job_id.is_(None) if held_by is None else \
                and_(RankSlot.job_id == held_by, RankSlot.attempt == held_attempt)
            won = s.execute(update(RankSlot).where(RankSlot.host == host, RankSlot.slot == slot, was)
                            .values(job_id=job_id, attempt=attempt, reserved_at=now)).rowcount
            if won != 1:
                s.rollback()   # taken under us: all or nothing
                return None
        return [slot for slot, _, _ in rows]


def release(settings: Settings, job_id: str, attempt: int, host: str | None = None,
            slots: list[int] | None = None) -> int:
    """Free this attempt's slots on `host` (only `slots` when given); how many were freed."""
    mine = [RankSlot.host == (host or this_host(settings)), RankSlot.job_id == job_id, RankSlot.attempt == attempt]
    if slots is not None:
        mine.append(RankSlot.slot.in_(slots))
    with session_scope(settings.database_url) as s:
        return s.execute(update(RankSlot).where(*mine).values(job_id=None, attempt=None, reserved_at=None)).rowcount


def held(settings: Settings, host: str | None = None) -> dict[int, str]:
    """slot -> job id of the slots reserved on `host` (running or stale)."""
    with session_scope(settings.database_url) as s:
        return {slot: job for slot, job in s.execute(select(RankSlot.slot, RankSlot.job_id)
                                                     .where(RankSlot.host == (host or this_host(settings)),
                                                            RankSlot.job_id.is_not(None)))}
