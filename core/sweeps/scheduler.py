"""The sweep controller: makes a sweep's trials, one job each, never more than max_concurrent at
once, and ends the sweep when its last trial has ended.

It has no process of its own. `fill` runs wherever something may have freed a slot: in the API
right after the sweep is committed, in the worker right after a trial's job reached its final
status, and in core.reconciler's pass (every API and worker process), which also covers what ends
outside a worker (a queued trial cancelled, a lost worker's trial failed) and any process that
died between two steps. Any number of them may act on one sweep at once: each new trial is made
under the sweep row's lock, taken by a conditional UPDATE on it (a row lock on PostgreSQL, the
write lock on SQLite) held until the trial's job is committed, and the counts that bound it
(trials made, trials active, the key's active jobs) are read under that lock.

A trial is created through core.lifecycle.submit, as any job: committed, then dispatched; the
ordinary workers train it.
"""
from __future__ import annotations

import logging

from pydantic import ValidationError
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from engine import SpecError

from .. import lifecycle
from ..admission import Rejection, admit, new_job
from ..db import get_sessionmaker, session_scope
from ..jobspec import JobRequest
from ..lifecycle import ACTIVE, JobStatus
from ..quota import StorageFull
from ..settings import Settings
from ..tables import Dataset, Job, Sweep, SweepTrial, new_id, utcnow
from ..webhooks import outbox
from . import space, store, study
from .spec import SweepRequest, SweepStatus

log = logging.getLogger("chainrule.sweeps")

BATCH = 100   # sweeps looked at per reconciler pass


def fill(settings: Settings, sweep_id: str) -> list[str]:
    """Make trials while the sweep has free slots and trials left; end it when all have ended.
    Returns the new trials' job ids. Safe to call from any process at any time."""
    made = []
    while (job_id := _next_trial(settings, sweep_id)) is not None:
        made.append(job_id)
    finish_if_done(settings, sweep_id)
    return made


def _lock(session: Session, sweep_id: str) -> Sweep | None:
    """Lock the running sweep's row for this transaction (a no-op UPDATE) and read it fresh."""
    locked = session.execute(update(Sweep).where(Sweep.id == sweep_id, Sweep.status == SweepStatus.RUNNING,
                                                 Sweep.cancel_requested.is_(False))
                             .values(trials_created=Sweep.trials_created)).rowcount
    return session.get(Sweep, sweep_id, populate_existing=True) if locked else None


def _next_trial(settings: Settings, sweep_id: str) -> str | None:
    """Make the sweep's next trial, if it has a free slot and its key may have one more job: the
    trial and its job are committed together under the sweep's lock, then the job is sent."""
    with get_sessionmaker(settings.database_url)() as s:
        sweep = _lock(s, sweep_id)
        if sweep is None or sweep.trials_created >= sweep.max_trials \
                or store.active_trials(s, sweep_id) >= sweep.max_concurrent:
            s.rollback()
            return None
        dataset = s.get(Dataset, sweep.dataset_id) if sweep.dataset_id else None
        if dataset is None:
            _end(s, sweep, SweepStatus.FAILED, "dataset_missing",
                 "the sweep's dataset was deleted; no further trials can be made. Upload it again and "
                 "submit the sweep again")
            s.commit()
            return None
        spec = SweepRequest.model_validate(sweep.request)
        point = study.next_point(spec, store.load_records(s, sweep_id))
        job = _trial_job(s, settings, sweep, spec, dataset, point)
        if job.status != JobStatus.FAILED:
            try:
                lifecycle.add_queued(s, settings, job)
            except (lifecycle.ConcurrencyLimit, lifecycle.NoWorker, StorageFull) as exc:
                log.info("sweep %s: no trial now (%s); the reconciler tries again", sweep_id, exc)
                s.rollback()
                return None
        s.add(SweepTrial(sweep_id=sweep_id, number=sweep.trials_created, job_id=job.id, params=point.params,
                         optuna_params=point.optuna_params, system_attrs=point.system_attrs))
        sweep.trials_created += 1
        s.commit()
        if job.status == JobStatus.QUEUED:
            lifecycle.dispatch(settings, job.id, job.queue)
        log.info("sweep %s: trial %d is job %s %s", sweep_id, sweep.trials_created - 1, job.id, point.params)
        return job.id


def _trial_job(session: Session, settings: Settings, sweep: Sweep, spec: SweepRequest, dataset: Dataset,
               point: space.Point) -> Job:
    """The trial's job, admitted as POST /v1/jobs admits one. A point outside what was checked at
    submit that does not admit (random and TPE draws are only sampled then) becomes a failed
    trial that says why, and the sweep goes on."""
    request = {**space.apply(spec.job, point.params, spec.parameters), "dataset_id": dataset.id}
    try:
        req = JobRequest.model_validate(request)
        graph = admit(req, dataset, settings)
    except (ValidationError, SpecError, Rejection) as exc:
        message = exc.message if isinstance(exc, Rejection) else str(exc)
        job = Job(id=new_id(), owner_id=sweep.owner_id, dataset_id=dataset.id, request=request,
                  device=request.get("device", "auto"), queue="none", n_parameters=0,
                  max_attempts=settings.max_attempts, sweep_id=sweep.id)
        lifecycle.reject(session, job, "invalid_trial", f"the trial's parameters {point.params} make an invalid "
                         f"job: {message}"[:4000])
        return job
    return new_job(req, dataset, graph, sweep.owner_id, settings, sweep_id=sweep.id)


def _end(session: Session, sweep: Sweep, status: SweepStatus, code: str | None = None,
         message: str | None = None) -> None:
    sweep.status, sweep.finished_at, sweep.error_code, sweep.error_message = status, utcnow(), code, message
    session.flush()
    outbox.sweep_ended(session, None, sweep.id)   # sent at the reconciler's next pass
    log.info("sweep %s: %s%s", sweep.id, status, f" ({code}: {message})" if code else "")


def finish_if_done(settings: Settings, sweep_id: str) -> SweepStatus | None:
    """running -> succeeded (a trial succeeded) or failed (none did) once every trial has been made
    and has ended. The status it moved to, else None."""
    with session_scope(settings.database_url) as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None or sweep.status != SweepStatus.RUNNING or sweep.trials_created < sweep.max_trials \
                or store.active_trials(s, sweep_id):
            return None
        jobs = s.execute(select(Job.status, Job.error_message).where(Job.sweep_id == sweep_id)
                         .order_by(Job.created_at)).all()
        succeeded = any(status == JobStatus.SUCCEEDED for status, _ in jobs)
        values = {"status": SweepStatus.SUCCEEDED if succeeded else SweepStatus.FAILED, "finished_at": utcnow()}
        if not succeeded:
            first = next((message for status, message in jobs if message), "no trial reported an error")
            values |= {"error_code": "no_trial_succeeded",
                       "error_message": f"none of the {sweep.trials_created} trials succeeded; the first "
                                        f"error: {first}"[:4000]}
        won = s.execute(update(Sweep).where(Sweep.id == sweep_id, Sweep.status == SweepStatus.RUNNING)
                        .values(**values)).rowcount
        if won:
            outbox.sweep_ended(s, settings, sweep_id)
    if won:
        log.info("sweep %s: %s", sweep_id, values["status"])
    return values["status"] if won else None


def cancel(settings: Settings, sweep_id: str) -> None:
    """running -> cancelled at once (no trial is made after), then every queued trial cancelled
    and every running one flagged: its worker stops it at its next poll. Idempotent."""
    with session_scope(settings.database_url) as s:
        if s.execute(update(Sweep).where(Sweep.id == sweep_id, Sweep.status == SweepStatus.RUNNING)
                     .values(status=SweepStatus.CANCELLED, cancel_requested=True, finished_at=utcnow())).rowcount:
            outbox.sweep_ended(s, settings, sweep_id)
    stop_trials(settings, sweep_id)


def stop_trials(settings: Settings, sweep_id: str) -> list[str]:
    with session_scope(settings.database_url) as s:
        ids = list(s.scalars(select(Job.id).where(Job.sweep_id == sweep_id, Job.status.in_(ACTIVE),
                                                  Job.cancel_requested.is_(False))))
    for job_id in ids:
        lifecycle.cancel(settings, job_id)
    return ids


def trial_ended(settings: Settings, job_id: str) -> None:
    """After a job's final transition: if it was a trial, its sweep may make the next one."""
    with session_scope(settings.database_url) as s:
        sweep_id = s.scalar(select(Job.sweep_id).where(Job.id == job_id))
    if sweep_id is not None:
        fill(settings, sweep_id)


def advance_all(settings: Settings) -> dict[str, list[str]]:
    """The reconciler's pass: fill running sweeps that have a free slot and trials left or are done;
    stop the trials of cancelled sweeps that are still active (a cancel cut short)."""
    active = select(func.count()).select_from(Job).where(Job.sweep_id == Sweep.id, Job.status.in_(ACTIVE)) \
        .scalar_subquery()
    with session_scope(settings.database_url) as s:   # read first: the lock is a write, taken only when useful
        running = list(s.scalars(select(Sweep.id).where(
            Sweep.status == SweepStatus.RUNNING,
            or_(and_(Sweep.trials_created < Sweep.max_trials, active < Sweep.max_concurrent),
                and_(Sweep.trials_created >= Sweep.max_trials, active == 0)))
            .order_by(Sweep.created_at).limit(BATCH)))
        stopping = list(s.scalars(select(Job.sweep_id).join(Sweep, Job.sweep_id == Sweep.id).distinct()
                                  .where(Sweep.status != SweepStatus.RUNNING, Job.status.in_(ACTIVE),
                                         Job.cancel_requested.is_(False)).limit(BATCH)))
    made = [job_id for sweep_id in running for job_id in fill(settings, sweep_id)]
    stopped = [job_id for sweep_id in stopping for job_id in stop_trials(settings, sweep_id)]
    return {"trials_made": made, "trials_stopped": stopped}
