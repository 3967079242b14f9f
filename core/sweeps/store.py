"""Reading a sweep's trials for a decision, and a trial's epoch written back.

A trial's curve is its job's job_metrics rows; its SweepTrial row keeps a constant-size summary
(best and last value) that each epoch rewrites, so a long trial costs the same per epoch as a
short one. A decision gets, per trial, the epochs Optuna looks at: the best and the last (the
pruners' and TPE's), and for the median rule the finished trials' value at the epoch in question.
"""
from __future__ import annotations

import math

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..lifecycle import ACTIVE, JobStatus
from ..tables import Job, JobMetric, SweepTrial
from .study import TrialRecord


def metric_column(metric: str):
    """The sweep metric in job_metrics: a column for the losses, else a number in the metrics JSON."""
    if metric in ("val_loss", "train_loss"):
        return getattr(JobMetric, metric)
    return JobMetric.metrics[metric].as_float()


def load_records(session: Session, sweep_id: str, *, metric: str | None = None,
                 at_epoch: int | None = None) -> list[TrialRecord]:
    """Every trial of the sweep, in number order. With `at_epoch`, the succeeded trials' values
    also hold `metric` at that epoch (what the median rule compares with)."""
    rows = session.execute(
        select(SweepTrial, Job.status, Job.error_code).outerjoin(Job, SweepTrial.job_id == Job.id)
        .where(SweepTrial.sweep_id == sweep_id).order_by(SweepTrial.number)).all()
    at: dict[str, float | None] = {}
    if at_epoch is not None:
        column = metric_column(metric)
        at = dict(session.execute(
            select(JobMetric.job_id, column).join(Job, JobMetric.job_id == Job.id)
            .where(Job.sweep_id == sweep_id, Job.status == JobStatus.SUCCEEDED, JobMetric.epoch == at_epoch)).all())
    records = []
    for trial, status, code in rows:
        values = known_values(trial)
        if trial.job_id in at:
            values[at_epoch] = finite(at[trial.job_id])
        records.append(TrialRecord(number=trial.number, optuna_params=trial.optuna_params,
                                   system_attrs=trial.system_attrs, values=values, best=trial.best_value,
                                   job_status=status, error_code=code))
    return records


def known_values(trial: SweepTrial) -> dict[int, float | None]:
    """The epochs of the curve the row keeps: its best and its last."""
    values: dict[int, float | None] = {}
    if trial.best_epoch is not None:
        values[trial.best_epoch] = trial.best_value
    if trial.last_epoch is not None:
        values[trial.last_epoch] = trial.last_value
    return values


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def active_trials(session: Session, sweep_id: str) -> int:
    """Trials queued or running: what max_concurrent bounds."""
    return session.scalar(select(func.count()).select_from(Job)
                          .where(Job.sweep_id == sweep_id, Job.status.in_(ACTIVE)))

