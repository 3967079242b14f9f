"""/v1/sweeps: submit a hyperparameter sweep (admitted, committed, its first trials made), list,
read, cancel, delete. The trials are jobs (GET /v1/jobs?sweep=ID); the controller that makes
them is core.sweeps.scheduler, which never trains here: workers do.
"""
from __future__ import annotations

import shutil
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import delete, func, select

from core import artifacts
from core.lifecycle import ACTIVE
from core.sweeps import SweepRequest, SweepStatus, scheduler
from core.tables import Dataset, Job, Sweep

from core.admission import Rejection

from ..deps import CurrentKey, SessionDep, SettingsDep, SweepId, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..schemas import LIST_LIMIT_MAX
from ..strict_json import StrictJSONRoute
from ..sweep_admission import admit_sweep
from ..sweep_schemas import SweepList, SweepPublic, sweep_public

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/sweeps", tags=["sweeps"],
                   responses=error_responses(*EVERY_OPERATION))
NOT_FOUND = error_responses(404, s404="No such sweep for this key")


@router.post("", status_code=202, response_model=SweepPublic, summary="Submit a hyperparameter sweep",
             responses=error_responses(404, 429, s404="No such dataset for this key",
                                       s429="Too many requests (Retry-After), or too many running sweeps"))
def submit_sweep(req: SweepRequest, response: Response, session: SessionDep, owner: CurrentKey,
                 settings: SettingsDep) -> SweepPublic:
    """Every parameter value (every grid point; for random and TPE a sample of the space) is checked
    as a job would be; the first trials (up to max_concurrent) are queued before this returns."""
    dataset = session.get(Dataset, req.dataset_id)
    if dataset is None or dataset.owner_id != owner.id:
        raise problem(404, ["body", "dataset_id"], f"dataset_id: dataset {req.dataset_id!r} not found")
    running = session.scalar(select(func.count()).select_from(Sweep).where(
        Sweep.owner_id == owner.id, Sweep.status == SweepStatus.RUNNING))
    if running >= settings.max_active_sweeps:
        raise problem(429, ["body"], f"this key has {running} sweeps running; the limit is "
                      f"{settings.max_active_sweeps}: wait for one to finish or cancel one")
    try:
        max_trials = admit_sweep(req, dataset, settings)
    except Rejection as e:
        raise problem(e.status, e.loc, e.message, e.type)
    # as given, not with defaults: the scheduler writes points into the job as the user wrote it
    sweep = Sweep(owner_id=owner.id, name=req.name, dataset_id=dataset.id, status=SweepStatus.RUNNING,
                  request=req.model_dump(mode="json", exclude_unset=True), max_trials=max_trials,
                  max_concurrent=req.max_concurrent)
    session.add(sweep)
    session.commit()
    scheduler.fill(settings, sweep.id)
    session.refresh(sweep)
    response.headers["Location"] = f"/v1/sweeps/{sweep.id}"
    return sweep_public(session, sweep)


@router.get("", response_model=SweepList, summary="List this key's sweeps, newest first")
def list_sweeps(session: SessionDep, owner: CurrentKey,
                status: Annotated[SweepStatus | None, Query(description="Only sweeps in this status.")] = None,
                limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 20,
                offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> SweepList:
    where = [Sweep.owner_id == owner.id] + ([Sweep.status == status] if status else [])
    total = session.scalar(select(func.count()).select_from(Sweep).where(*where))
    rows = session.scalars(select(Sweep).where(*where).order_by(Sweep.created_at.desc(), Sweep.id)
                           .limit(limit).offset(offset))
    return SweepList(items=[sweep_public(session, s, with_trials=False) for s in rows], total=total,
                     limit=limit, offset=offset)


@router.get("/{sweep_id}", response_model=SweepPublic, responses=NOT_FOUND,
            summary="Status, counts, every trial and the best one")
def get_sweep(sweep_id: SweepId, session: SessionDep, owner: CurrentKey) -> SweepPublic:
    return sweep_public(session, get_owned(session, owner, Sweep, sweep_id, "sweep"))


@router.post("/{sweep_id}/cancel", response_model=SweepPublic, responses=NOT_FOUND,
             summary="Cancel a sweep: no new trials; queued ones cancelled, running ones stopped (idempotent)")
def cancel_sweep(sweep_id: SweepId, session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> SweepPublic:
    sweep = get_owned(session, owner, Sweep, sweep_id, "sweep")
    scheduler.cancel(settings, sweep.id)
    session.refresh(sweep)
    return sweep_public(session, sweep)


@router.delete("/{sweep_id}", status_code=204, summary="Delete a finished sweep with its trials' jobs and files",
               responses={**NOT_FOUND, **error_responses(
                   409, s409="The sweep is running or a trial is still active")})
def delete_sweep(sweep_id: SweepId, session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> Response:
    sweep = get_owned(session, owner, Sweep, sweep_id, "sweep")
    active = session.scalar(select(func.count()).select_from(Job).where(Job.sweep_id == sweep.id,
                                                                        Job.status.in_(ACTIVE)))
    if sweep.status == SweepStatus.RUNNING or active:
        raise problem(409, ["path", "sweep_id"], f"sweep {sweep.id!r} is {sweep.status} with {active} trials "
                      f"queued or running; cancel it (POST /v1/sweeps/{sweep.id}/cancel) and delete it once "
                      "its trials have stopped")
    job_ids = list(session.scalars(select(Job.id).where(Job.sweep_id == sweep.id)))
    session.execute(delete(Job).where(Job.sweep_id == sweep.id))
    session.delete(sweep)
    session.commit()
    for job_id in job_ids:
        shutil.rmtree(artifacts.resolve(settings, artifacts.job_dir_relpath(job_id)), ignore_errors=True)
    return Response(status_code=204)
