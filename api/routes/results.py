"""What a job produces: its per-epoch metrics, its weights and predictions from them."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import func, select

from core import artifacts, findings
from core.lifecycle import JobStatus
from core.settings import Settings
from core.tables import Dataset, Job, JobFinding, JobMetric
from engine.diagnostics import RULES
from engine.text import LANGUAGE_MODEL

from ..deps import CurrentKey, JobId, SessionDep, SettingsDep, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..strict_json import StrictJSONRoute
from ..predict import InputError, inputs_to_array, predict, texts_to_ids
from ..predict_columns import ColumnsError, feature_rows
from ..schemas import LIST_LIMIT_MAX, FindingList, MetricsPublic, PredictRequest, PredictResponse, metrics_entry
from .jobs import NOT_FOUND

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/jobs", tags=["jobs"],
                   responses=error_responses(*EVERY_OPERATION))
NOT_SUCCEEDED = error_responses(409, s409="The job has not succeeded (yet)")


def succeeded_weights_path(job: Job, settings: Settings, what: str) -> Path:
    """The weights file of a succeeded job; 409 before it has succeeded, 404 if the file is gone."""
    if job.status != JobStatus.SUCCEEDED:
        raise problem(409, ["path", "job_id"], f"job {job.id!r} is {job.status}; {what} once it has succeeded")
    path = artifacts.resolve(settings, job.weights_path or artifacts.weights_relpath(job.id))
    if not path.is_file():
        raise problem(404, ["path", "job_id"], f"the weights file of job {job.id!r} is missing from the store")
    return path


@router.get("/{job_id}/metrics", response_model=MetricsPublic, responses=NOT_FOUND,
            summary="Per-epoch metrics: losses, accuracy or MAE/R², gradient health")
def get_metrics(job_id: JobId, session: SessionDep, owner: CurrentKey) -> MetricsPublic:
    job = get_owned(session, owner, Job, job_id, "job")
    rows = session.scalars(select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.epoch))
    return MetricsPublic(job_id=job.id, epochs=[metrics_entry(r) for r in rows])


@router.get("/{job_id}/findings", response_model=FindingList, responses=NOT_FOUND,
            summary="What the diagnostics rules found, in the order found")
def list_findings(job_id: JobId, session: SessionDep, owner: CurrentKey,
                  severity: Annotated[Literal["info", "warning", "error"] | None,
                                      Query(description="Only findings of this severity.")] = None,
                  code: Annotated[Literal[RULES] | None, Query(description="Only this rule's findings.")] = None,
                  after_id: Annotated[int, Query(ge=0, le=2**62, description="Only findings with a larger id "
                                                 "(to poll for new ones).")] = 0,
                  limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = LIST_LIMIT_MAX,
                  offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> FindingList:
    job = get_owned(session, owner, Job, job_id, "job")
    where = [JobFinding.job_id == job.id, JobFinding.id > after_id] + \
        ([JobFinding.severity == severity] if severity else []) + ([JobFinding.code == code] if code else [])
    total = session.scalar(select(func.count()).select_from(JobFinding).where(*where))
    rows = session.scalars(select(JobFinding).where(*where).order_by(JobFinding.id).limit(limit).offset(offset))
    return FindingList(job_id=job.id, items=[findings.public(r) for r in rows], total=total, limit=limit,
                       offset=offset)


@router.get("/{job_id}/weights", responses={**NOT_FOUND, **NOT_SUCCEEDED, 200: {
    "content": {"application/octet-stream": {}},
    "description": "safetensors; loads with torch_model.load_state_dict(load_file(path), strict=True)"}},
    response_class=FileResponse, summary="Download the trained weights (.safetensors)")
def get_weights(job_id: JobId, session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> FileResponse:
    path = succeeded_weights_path(get_owned(session, owner, Job, job_id, "job"), settings, "weights can be downloaded")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{job_id}.safetensors")


def _texts(inputs: list, job: Job) -> bool:
    """A sequence classifier's rows sent as raw text (its dataset's tokenizer makes the ids)."""
    return job.tokenizer is not None and job.task != LANGUAGE_MODEL and any(isinstance(v, str) for v in inputs)


@router.post("/{job_id}/predict", response_model=PredictResponse, response_model_exclude_none=True,
             responses={**NOT_FOUND, **NOT_SUCCEEDED}, summary="Run the trained network on rows")
def predict_job(job_id: JobId, body: PredictRequest, request: Request, session: SessionDep, owner: CurrentKey,
                settings: SettingsDep) -> PredictResponse:
    job = get_owned(session, owner, Job, job_id, "job")
    weights = succeeded_weights_path(job, settings, "it can predict")
    if len(body.inputs) > settings.max_predict_rows:
        raise problem(422, ["body", "inputs"], f"{len(body.inputs)} rows; at most {settings.max_predict_rows} "
                      "per request")
    if job.input_shape is None:
        raise problem(409, ["path", "job_id"], f"job {job.id!r} predates recording its input shape on the job "
                      "and its dataset was deleted, so predict cannot check inputs; download its weights instead")
    shape = tuple(int(d) for d in job.input_shape)
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
    try:
        x = texts_to_ids(body.inputs, job, shape) if _texts(body.inputs, job) else \
            inputs_to_array(feature_rows(body.inputs, body.columns, dataset), shape)
    except InputError as e:
        raise problem(422, ["body", "columns" if isinstance(e, ColumnsError) else "inputs"], str(e))
    loaded = request.app.state.model_cache.get(job.id, job.request, shape, weights)
    classes = job.classes if job.task == "classification" else None
    return PredictResponse(**predict(loaded, x, job.request["loss"]["type"], classes, settings.predict_memory_bytes))
