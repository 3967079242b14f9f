"""Sweep responses, and how they are read from the sweep's rows: its trials (SweepTrial) beside
their jobs, each trial's best metric value, the counts and the best trial."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.lifecycle import JobStatus
from core.sweeps import SweepRequest, SweepStatus
from core.sweeps.study import PRUNED
from core.tables import Job, Sweep, SweepTrial

from .schemas import JobError, UtcDatetime


class TrialPublic(BaseModel):
    number: int
    job_id: str | None = Field(description="Null once the trial's job has been deleted.")
    status: JobStatus | Literal["deleted"]
    pruned: bool = Field(description="Stopped early by the sweep's pruner (status cancelled, error pruned).")
    params: dict[str, Any] = Field(description="The trial's value at each parameter path.")
    epochs: int = Field(description="Epochs trained.")
    value: float | None = Field(description="The best value of the sweep's metric over the trial's epochs.")
    best_epoch: int | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    error: JobError | None


class BestTrial(BaseModel):
    number: int
    job_id: str | None
    params: dict[str, Any]
    value: float
    best_epoch: int


class SweepCounts(BaseModel):
    made: int = Field(description="Trials made so far (each is a job).")
    remaining: int = Field(description="Trials still to be made.")
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    pruned: int = 0
    failed: int = 0
    cancelled: int = Field(0, description="Cancelled other than by pruning.")
    deleted: int = 0


class SweepSummary(BaseModel):
    id: str
    name: str
    status: SweepStatus
    dataset_id: str | None
    method: Literal["grid", "random", "tpe"]
    metric: str
    goal: Literal["minimize", "maximize"]
    early_stopping: str = Field(description="none | asha | median")
    max_trials: int
    max_concurrent: int
    created_at: UtcDatetime
    finished_at: UtcDatetime | None
    counts: SweepCounts
    epochs_trained: int = Field(description="Epochs trained by all trials together.")
    epochs_without_pruning: int = Field(description="What the trials made so far would have trained "
                                                    "without early stopping: made × the job's epochs.")
    best_trial: BestTrial | None = Field(description="The succeeded trial with the best value; the lowest "
                                                     "trial number on ties.")
    error: JobError | None


class SweepPublic(SweepSummary):
    request: dict[str, Any] = Field(description="The sweep as submitted (each trial's job, with defaults "
                                                "filled in, is its job's `request`).")
    trials: list[TrialPublic]


class SweepList(BaseModel):
    items: list[SweepSummary]
    total: int
    limit: int
    offset: int


def _trial(row: SweepTrial, job: Job | None) -> TrialPublic:
    error = JobError(code=job.error_code, message=job.error_message or "") if job and job.error_code else None
    return TrialPublic(number=row.number, job_id=row.job_id, status=job.status if job else "deleted",
                       pruned=bool(job and job.error_code == PRUNED), params=row.params,
                       epochs=job.epoch if job else row.last_epoch or 0, value=row.best_value,
                       best_epoch=row.best_epoch,
                       started_at=job.started_at if job else None, finished_at=job.finished_at if job else None,
                       error=error)


def _counts(sweep: Sweep, trials: list[TrialPublic]) -> SweepCounts:
    counts = SweepCounts(made=sweep.trials_created, remaining=max(sweep.max_trials - sweep.trials_created, 0)
                         if sweep.status == SweepStatus.RUNNING else 0)
    for t in trials:
        name = "pruned" if t.pruned else str(t.status)
        setattr(counts, name, getattr(counts, name) + 1)
    return counts


def _best(trials: list[TrialPublic], direction: str) -> BestTrial | None:
    done = [t for t in trials if t.status == JobStatus.SUCCEEDED and t.value is not None]
    if not done:
        return None
    sign = 1.0 if direction == "minimize" else -1.0
    best = min(done, key=lambda t: (sign * t.value, t.number))
    return BestTrial(number=best.number, job_id=best.job_id, params=best.params, value=best.value,
                     best_epoch=best.best_epoch)


def sweep_public(session: Session, sweep: Sweep, *, with_trials: bool = True) -> SweepPublic | SweepSummary:
    spec = SweepRequest.model_validate(sweep.request)
    rows = session.execute(select(SweepTrial, Job).outerjoin(Job, SweepTrial.job_id == Job.id)
                           .where(SweepTrial.sweep_id == sweep.id).order_by(SweepTrial.number)).all()
    trials = [_trial(row, job) for row, job in rows]
    fields = dict(
        id=sweep.id, name=sweep.name, status=sweep.status, dataset_id=sweep.dataset_id, method=spec.method,
        metric=spec.metric, goal=spec.direction, early_stopping=spec.early_stopping.type,
        max_trials=sweep.max_trials, max_concurrent=sweep.max_concurrent, created_at=sweep.created_at,
        finished_at=sweep.finished_at, counts=_counts(sweep, trials), epochs_trained=sum(t.epochs for t in trials),
        epochs_without_pruning=sweep.trials_created * spec.job.epochs, best_trial=_best(trials, spec.direction),
        error=JobError(code=sweep.error_code, message=sweep.error_message or "") if sweep.error_code else None)
    if not with_trials:
        return SweepSummary(**fields)
    return SweepPublic(**fields, request=sweep.request, trials=trials)
