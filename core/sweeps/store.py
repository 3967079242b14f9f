"""Reading a sweep's trials for a decision: one query for the trial rows and their jobs' status."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..lifecycle import ACTIVE
from ..tables import Job, SweepTrial
from .study import TrialRecord


def epoch_values(values: dict) -> dict[int, float | None]:
    """The JSON {"3": 0.41} of a trial row -> {3: 0.41}."""
    return {int(epoch): value for epoch, value in (values or {}).items()}


def load_records(session: Session, sweep_id: str) -> list[TrialRecord]:
    rows = session.execute(
        select(SweepTrial, Job.status, Job.error_code).outerjoin(Job, SweepTrial.job_id == Job.id)
        .where(SweepTrial.sweep_id == sweep_id).order_by(SweepTrial.number)).all()
    return [TrialRecord(number=t.number, optuna_params=t.optuna_params, system_attrs=t.system_attrs,
                        values=epoch_values(t.values), job_status=status, error_code=code)
            for t, status, code in rows]


def active_trials(session: Session, sweep_id: str) -> int:
    """Trials queued or running: what max_concurrent bounds."""
    return session.scalar(select(func.count()).select_from(Job)
                          .where(Job.sweep_id == sweep_id, Job.status.in_(ACTIVE)))


def active_jobs(session: Session, owner_id: str) -> int:
    """The key's jobs queued or running, trials included: what max_concurrent_jobs bounds."""
    return session.scalar(select(func.count()).select_from(Job)
                          .where(Job.owner_id == owner_id, Job.status.in_(ACTIVE)))
