"""/v1/jobs: submit (validated, committed, then enqueued), poll, metrics, cancel, weights, predict.

Training never runs here: a job is a row plus a broker message carrying its id.
"""
from __future__ import annotations

import logging
import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from chainrule import artifacts
from chainrule.db import get_engine
from chainrule.jobspec import JobRequest
from chainrule.models import Dataset, Job, JobMetric, utcnow
from chainrule.queue import enqueue, queue_for

from ..deps import CurrentKey, Principal, SessionDep, SettingsDep
from ..errors import problem
from ..predict import InputError, inputs_to_array, predict, weights_metadata
from ..schemas import (ACTIVE_STATUSES, FINAL_STATUSES, LIST_LIMIT_MAX, JobList, JobPublic, JobStatus,
                       MetricsPublic, PredictRequest, PredictResponse, job_fields)
from ..submit import Rejection, validate_submission

log = logging.getLogger("chainrule.api")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
BROKER_BACKOFF_S = 10.0
_NOT_FOUND = {404: {"description": "No such job for this key"}}
_NOT_SUCCEEDED = {409: {"description": "The job has not succeeded (yet)"}}


def get_owned(session: Session, owner: Principal, job_id: str) -> Job:
    """One primary-key SELECT; another key's job is exactly as absent as a missing one."""
    job = session.get(Job, job_id)
    if job is None or job.owner_id != owner.id:
        raise problem(404, ["path", "job_id"], f"job {job_id!r} not found")
    return job


def _require_succeeded(job: Job, what: str) -> None:
    if job.status != "succeeded":
        raise problem(409, ["path", "job_id"], f"job {job.id!r} is {job.status}; {what} once it has succeeded")


def _send(state, settings, job: Job) -> bool:
    """Hand a committed job to the broker. When the broker is down the job stays unsent (sent_at NULL)
    for the janitor to resend, and for BROKER_BACKOFF_S submits do not wait on it again."""
    if time.monotonic() < getattr(state, "broker_down_until", 0.0):
        log.warning("broker marked down; job %s left for the janitor to send", job.id)
        return False
    try:
        enqueue(settings, job.id, job.queue)
        return True
    except Exception:
        state.broker_down_until = time.monotonic() + BROKER_BACKOFF_S
        log.warning("broker unavailable; job %s stays queued unsent until the janitor resends it", job.id,
                    exc_info=True)
        return False


@router.post("", status_code=202, response_model=JobPublic, summary="Submit a training job",
             responses={404: {"description": "No such dataset for this key"},
                        429: {"description": "Too many queued or running jobs for this key"}})
def submit_job(req: JobRequest, request: Request, response: Response, session: SessionDep, owner: CurrentKey,
               settings: SettingsDep) -> JobPublic:
    dataset = session.get(Dataset, req.dataset_id)
    if dataset is None or dataset.owner_id != owner.id:
        raise problem(404, ["body", "dataset_id"], f"dataset {req.dataset_id!r} not found")
    try:
        plan = validate_submission(req, dataset, settings)  # SpecError -> 422 via its handler
    except Rejection as e:
        raise problem(e.status, e.loc, e.message, e.type)
    active = session.scalar(select(func.count()).select_from(Job).where(
        Job.owner_id == owner.id, Job.status.in_(ACTIVE_STATUSES)))
    if active >= settings.max_concurrent_jobs:
        raise problem(429, ["body"], f"this key has {active} jobs queued or running; the limit is "
                      f"{settings.max_concurrent_jobs}: wait for one to finish or cancel one")
    job = Job(owner_id=owner.id, dataset_id=dataset.id, status="queued", request=req.model_dump(mode="json"),
              device=req.device, queue=queue_for(req.device), n_parameters=plan.n_parameters,
              max_attempts=settings.max_attempts)
    session.add(job)
    session.commit()  # the worker must find the row the message names
    if _send(request.app.state, settings, job):
        job.sent_at = utcnow()
        session.commit()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobPublic.from_row(job)


@router.get("", response_model=JobList, summary="List this key's jobs, newest first")
def list_jobs(session: SessionDep, owner: CurrentKey,
              status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
              limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 20,
              offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> JobList:
    where = [Job.owner_id == owner.id] + ([Job.status == status] if status else [])
    total = session.scalar(select(func.count()).select_from(Job).where(*where))
    rows = session.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id)
                           .limit(limit).offset(offset))
    return JobList(items=[JobPublic.from_row(j) for j in rows], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobPublic, responses=_NOT_FOUND, summary="Status and progress of a job")
async def get_job(job_id: str, owner: CurrentKey, settings: SettingsDep) -> Response:
    """The polling hot path: one primary-key SELECT, serialized straight to JSON. On SQLite the read
    (tens of microseconds; under WAL it never waits on the worker's writes) runs on the event loop,
    as a thread hop costs more than the read; a database across the network gets one thread hop."""
    url = settings.database_url
    if url.startswith("sqlite"):
        row = _read_job(url, job_id)
    else:
        row = await run_in_threadpool(_read_job, url, job_id, autocommit=True)
    if row is None or row.owner_id != owner.id:
        raise problem(404, ["path", "job_id"], f"job {job_id!r} not found")
    return Response(orjson.dumps(job_fields(row), option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z),
                    media_type="application/json")


def _read_job(url: str, job_id: str, autocommit: bool = False):
    """autocommit: one SELECT needs no transaction; on PostgreSQL that saves the BEGIN and ROLLBACK
    round trips (SQLite's driver begins none for a SELECT)."""
    with get_engine(url).connect() as conn:
        if autocommit:
            conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn.execute(_JOB_BY_ID, {"job_id": job_id}).first()


_JOB_BY_ID = select(Job.__table__).where(Job.__table__.c.id == bindparam("job_id"))


@router.get("/{job_id}/metrics", response_model=MetricsPublic, responses=_NOT_FOUND,
            summary="Per-epoch metrics: losses, accuracy or MAE/R², gradient health")
def get_metrics(job_id: str, session: SessionDep, owner: CurrentKey) -> MetricsPublic:
    job = get_owned(session, owner, job_id)
    rows = session.scalars(select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.epoch))
    epochs = [{**r.metrics, "epoch": r.epoch, "train_loss": r.metrics.get("train_loss", r.train_loss),
               "val_loss": r.metrics.get("val_loss", r.val_loss)} for r in rows]
    return MetricsPublic(job_id=job.id, epochs=epochs)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=_NOT_FOUND,
             summary="Cancel a queued or running job (idempotent)")
def cancel_job(job_id: str, session: SessionDep, owner: CurrentKey) -> JobPublic:
    """Queued: cancelled at once. Running: flagged; the worker stops at its next poll. Finished: unchanged."""
    job = get_owned(session, owner, job_id)
    for _ in range(3):  # the worker may move the job between our read and our write
        if job.status in FINAL_STATUSES:
            break
        if job.status == "queued":
            stmt = update(Job).where(Job.id == job.id, Job.status == "queued").values(
                status="cancelled", cancel_requested=True, finished_at=utcnow())
        else:
            stmt = update(Job).where(Job.id == job.id, Job.status == "running").values(cancel_requested=True)
        changed = session.execute(stmt).rowcount
        session.commit()
        session.refresh(job)
        if changed:
            break
    return JobPublic.from_row(job)


@router.get("/{job_id}/weights", responses={**_NOT_FOUND, **_NOT_SUCCEEDED, 200: {
    "content": {"application/octet-stream": {}},
    "description": "safetensors; loads with torch_model.load_state_dict(load_file(path), strict=True)"}},
    response_class=FileResponse, summary="Download the trained weights (.safetensors)")
def get_weights(job_id: str, session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> FileResponse:
    job = get_owned(session, owner, job_id)
    _require_succeeded(job, "weights can be downloaded")
    path = artifacts.resolve(settings, job.weights_path or artifacts.weights_relpath(job.id))
    if not path.is_file():
        raise problem(404, ["path", "job_id"], f"the weights file of job {job.id!r} is missing from the store")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{job.id}.safetensors")


@router.post("/{job_id}/predict", response_model=PredictResponse, response_model_exclude_none=True,
             responses={**_NOT_FOUND, **_NOT_SUCCEEDED}, summary="Run the trained network on rows")
def predict_job(job_id: str, body: PredictRequest, request: Request, session: SessionDep, owner: CurrentKey,
                settings: SettingsDep) -> PredictResponse:
    job = get_owned(session, owner, job_id)
    _require_succeeded(job, "it can predict")
    if len(body.inputs) > settings.max_predict_rows:
        raise problem(422, ["body", "inputs"], f"{len(body.inputs)} rows; at most {settings.max_predict_rows} "
                      "per request")
    weights = artifacts.resolve(settings, job.weights_path or artifacts.weights_relpath(job.id))
    if not weights.is_file():
        raise problem(404, ["path", "job_id"], f"the weights file of job {job.id!r} is missing from the store")
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
    meta = {"input_shape": dataset.input_shape, "task": dataset.task, "classes": dataset.classes} \
        if dataset is not None else weights_metadata(weights)   # the worker records them there too
    if meta.get("input_shape") is None:
        raise problem(409, ["path", "job_id"], f"the dataset of job {job.id!r} was deleted and its weights "
                      "file does not record the input shape predict needs")
    shape = tuple(int(d) for d in meta["input_shape"])
    try:
        x = inputs_to_array(body.inputs, shape)
    except InputError as e:
        raise problem(422, ["body", "inputs"], str(e))
    loaded = request.app.state.model_cache.get(job.id, job.request, shape, weights)
    classes = meta.get("classes") if meta.get("task") == "classification" else None
    return PredictResponse(**predict(loaded, x, job.request["loss"]["type"], classes))
