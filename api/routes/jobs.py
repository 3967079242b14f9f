"""/v1/jobs: submit (admitted, committed, then dispatched), list, poll, cancel, delete.

Training never runs here: a job is a row plus a broker message carrying its id. The moves
between statuses are core.lifecycle's; results (metrics, weights, predict) are routes/results.py.
"""
from __future__ import annotations

import asyncio
import shutil
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import exists, func, select

from core import artifacts, lifecycle
from core.admission import Rejection, admit, new_job
from core.db import get_engine
from core.jobspec import Label
from core.lifecycle import ACTIVE, JobStatus
from core.quota import StorageFull
from core.tables import ID_PATTERN, JOB_ROW, Dataset, Job, JobTag

from ..deps import CurrentKey, JobId, SessionDep, SettingsDep, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..schemas import LIST_LIMIT_MAX, MAX_TAGS, JobList, JobPublic, JobSubmit, JobSummary, Tag, job_fields
from ..strict_json import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/jobs", tags=["jobs"],
                   responses=error_responses(*EVERY_OPERATION))
NOT_FOUND = error_responses(404, s404="No such job for this key")


@router.post("", status_code=202, response_model=JobPublic, summary="Submit a training job",
             responses=error_responses(404, 409, 413, 429, s404="No such dataset for this key",
                                       s409="No live worker can take the job and worker_wait_s is 0",
                                       s413="A body past max_json_bytes, or the key's storage quota is full",
                                       s429="Too many requests (Retry-After), or too many queued or running jobs"))
def submit_job(req: JobSubmit, response: Response, session: SessionDep, owner: CurrentKey,
               settings: SettingsDep) -> JobPublic:
    dataset = session.get(Dataset, req.dataset_id)
    if dataset is None or dataset.owner_id != owner.id:
        raise problem(404, ["body", "dataset_id"], f"dataset {req.dataset_id!r} not found: upload one with "
                      "POST /v1/datasets and use the id of its response (GET /v1/datasets lists yours)")
    try:
        graph = admit(req, dataset, settings)  # SpecError -> 422 via its handler
    except Rejection as e:
        raise problem(e.status, e.loc, e.message, e.type)
    job = new_job(req, dataset, graph, owner.id, settings, name=req.name, tags=req.tags,
                  job_tags=[JobTag(tag=t) for t in req.tags])
    try:
        lifecycle.submit(session, settings, job)
    except lifecycle.ConcurrencyLimit as e:
        raise problem(429, ["body"], f"{e}: wait for one to finish or cancel one")
    except StorageFull as e:
        raise problem(413, ["body"], str(e))
    except lifecycle.NoWorker as e:
        raise problem(409, ["body", "device"], f"{e}; submit with device auto or cpu, or start a "
                      f"{e.queue} worker first")
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobPublic.from_row(job)


@router.get("", response_model=JobList, summary="List this key's jobs, newest first")
def list_jobs(session: SessionDep, owner: CurrentKey,
              status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
              name: Annotated[Label | None, Query(description="Only jobs with this name.")] = None,
              tag: Annotated[list[Tag] | None, Query(max_length=MAX_TAGS, description=(
                  "Only jobs with this tag; repeat it for jobs that have every one of the tags."))] = None,
              sweep: Annotated[str | None, Query(pattern=ID_PATTERN, description="Only this sweep's trials.")] = None,
              limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 20,
              offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
              fields: Annotated[list[Literal["request", "init_report"]] | None, Query(
                  max_length=2, description="Heavy fields each item should carry (repeat for both); "
                  "without it items are summaries, those fields null.")] = None) -> JobList:
    where = [Job.owner_id == owner.id] + ([Job.status == status] if status else []) + \
        ([Job.name == name] if name else []) + ([Job.sweep_id == sweep] if sweep else [])
    where += [exists().where(JobTag.job_id == Job.id, JobTag.tag == t) for t in dict.fromkeys(tag or [])]
    total = session.scalar(select(func.count()).select_from(Job).where(*where))
    rows = session.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id)
                           .limit(limit).offset(offset))
    wanted = set(fields or ())
    return JobList(items=[JobSummary.from_row_with(j, wanted) for j in rows], total=total, limit=limit,
                   offset=offset)


@router.get("/{job_id}", response_model=JobPublic, responses=NOT_FOUND, summary="Status and progress of a job")
async def get_job(job_id: JobId, owner: CurrentKey, settings: SettingsDep, request: Request) -> Response:
    """The polling hot path: one primary-key SELECT, serialized straight to JSON, on the event loop.
    On SQLite the read takes tens of microseconds (under WAL it never waits on the worker's writes);
    on PostgreSQL it goes through the asyncio pool the app's lifespan opened (core.poll_reads), and
    through SQLAlchemy's in a thread where there is none (an app served without its lifespan)."""
    url = settings.database_url
    reads = request.app.state.poll_reads
    if url.startswith("sqlite"):
        row = _read_job(url, job_id)
    elif reads is not None and reads.loop is asyncio.get_running_loop():
        row = await reads.job_row(job_id)
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
        return conn.execute(JOB_ROW, {"job_id": job_id}).first()


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=NOT_FOUND,
             summary="Cancel a queued or running job (idempotent)")
def cancel_job(job_id: JobId, session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> JobPublic:
    """Queued: cancelled at once. Running: flagged; the worker stops at its next poll. Finished: unchanged."""
    job = get_owned(session, owner, Job, job_id, "job")
    lifecycle.cancel(settings, job.id)
    session.refresh(job)
    return JobPublic.from_row(job)


@router.delete("/{job_id}", status_code=204, summary="Delete a finished job, its metrics and its files",
               responses={**NOT_FOUND, **error_responses(409, s409="The job is still queued or running")})
def delete_job(job_id: JobId, session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> Response:
    job = get_owned(session, owner, Job, job_id, "job")
    if job.status in ACTIVE:
        raise problem(409, ["path", "job_id"], f"job {job.id!r} is {job.status}; cancel it "
                      f"(POST /v1/jobs/{job.id}/cancel) and delete it once it has stopped")
    session.delete(job)
    session.commit()
    shutil.rmtree(artifacts.resolve(settings, artifacts.job_dir_relpath(job_id)), ignore_errors=True)
    return Response(status_code=204)
