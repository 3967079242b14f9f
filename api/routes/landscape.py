"""/v1/jobs/{id}/landscape: a succeeded job's loss landscape and curvature, computed on a worker.

POST queues it (202) and sends chainrule.landscape to the job's queue; GET shows its status, then
its result; cancel stops it. The moves between statuses are core.landscapes'; the mathematics is
engine.landscape, engine.hessian and core.hessian_report; the worker's side is worker/landscape.py.
"""
from __future__ import annotations

from fastapi import APIRouter, Response

from core import landscapes
from core.lifecycle import JobStatus
from core.settings import Settings
from core.tables import Job, Landscape

from ..analysis_schemas import LandscapePublic, LandscapeRequest
from ..deps import CurrentKey, JobId, SessionDep, SettingsDep, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..strict_json import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/jobs", tags=["analyses"],
                   responses=error_responses(*EVERY_OPERATION))
NO_LANDSCAPE = error_responses(404, s404="No such job for this key, or no landscape requested for it")
# request field -> (the setting that bounds it)
LIMITS = {"points": "landscape_max_points", "grid": "landscape_max_grid", "samples": "landscape_max_samples",
          "iterations": "hessian_max_iterations", "trace_samples": "hessian_max_trace_samples",
          "density_steps": "hessian_max_iterations"}


def _check_limits(body: LandscapeRequest, settings: Settings) -> None:
    for field, setting in LIMITS.items():
        value, limit = getattr(body, field), getattr(settings, setting)
        if value > limit:
            raise problem(422, ["body", field], f"{field}: {value:,} is over the limit of {limit:,} ({setting})",
                          "limit_exceeded")


def _landscape(session, owner, job_id: str) -> Landscape:
    get_owned(session, owner, Job, job_id, "job")
    row = session.get(Landscape, job_id)
    if row is None:
        raise problem(404, ["path", "job_id"], f"job {job_id!r} has no landscape: request one with "
                      f"POST /v1/jobs/{job_id}/landscape")
    return row


@router.post("/{job_id}/landscape", status_code=202, response_model=LandscapePublic,
             responses=error_responses(404, 409, 429, s404="No such job for this key",
                                       s409="The job has not succeeded, or its landscape is already queued "
                                            "or running",
                                       s429="Too many requests (Retry-After), or max_active_landscapes_per_key "
                                            "landscapes queued or running"),
             summary="Compute a trained job's loss landscape and Hessian eigenvalues on a worker")
def request_landscape(job_id: JobId, response: Response, session: SessionDep, owner: CurrentKey,
                      settings: SettingsDep, body: LandscapeRequest | None = None) -> LandscapePublic:
    """On a seeded subset of the job's training rows, in float64: the loss along the line from its initial
    to its final weights (alpha in [-0.5, 1.5]), on a grid around the final weights along two
    filter-normalised random directions, and the Hessian's extreme eigenvalues (Lanczos, scipy's eigsh on
    Hessian-vector products), each with an error bound, its spectral density (stochastic Lanczos
    quadrature) and trace (Hutchinson), with a verdict: minimum, saddle, maximum or inconclusive, and
    why. A finished landscape of the job is replaced."""
    body = body or LandscapeRequest()
    job = get_owned(session, owner, Job, job_id, "job")
    if job.status != JobStatus.SUCCEEDED:
        raise problem(409, ["path", "job_id"], f"job {job.id!r} is {job.status}; a landscape needs the final "
                      "weights of a succeeded job")
    _check_limits(body, settings)
    try:
        row = landscapes.request(session, settings, job, body.model_dump(mode="json"))
    except landscapes.Busy as e:
        raise problem(409, ["path", "job_id"], f"{e}: wait for it, or cancel it "
                      f"(POST /v1/jobs/{job_id}/landscape/cancel)")
    except landscapes.TooMany as e:
        raise problem(429, ["path", "job_id"], f"{e}: wait for one to finish or cancel one")
    response.headers["Location"] = f"/v1/jobs/{job_id}/landscape"
    return LandscapePublic.from_row(row)


@router.get("/{job_id}/landscape", response_model=LandscapePublic, responses=NO_LANDSCAPE,
            summary="A job's landscape: its status, then the line, the surface and the Hessian")
def get_landscape(job_id: JobId, session: SessionDep, owner: CurrentKey) -> LandscapePublic:
    return LandscapePublic.from_row(_landscape(session, owner, job_id))


@router.post("/{job_id}/landscape/cancel", response_model=LandscapePublic, responses=NO_LANDSCAPE,
             summary="Cancel a queued or running landscape (idempotent)")
def cancel_landscape(job_id: JobId, session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> LandscapePublic:
    """Queued: cancelled at once. Running: flagged; the worker stops at its next heartbeat. Finished: unchanged."""
    row = _landscape(session, owner, job_id)
    landscapes.cancel(settings, job_id)
    session.refresh(row)
    return LandscapePublic.from_row(row)
