"""GET /v1/jobs/{id}/plots/{kind}.png: a job's curves, gradient health and loss landscape as PNG
(api/plots.py draws them). Same key scoping as every job route: another key's job is a 404."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.lifecycle import JobStatus
from core.tables import Job, JobMetric, Landscape

from ..deps import CurrentKey, JobId, SessionDep, SettingsDep, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..schemas import metrics_entry
from ..strict_json import StrictJSONRoute
from .jobs import NOT_FOUND

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/jobs", tags=["jobs"],
                   responses=error_responses(*EVERY_OPERATION))


class PlotKind(str, Enum):
    loss = "loss"
    metric = "metric"
    grad_norms = "grad_norms"
    update_ratios = "update_ratios"
    landscape = "landscape"
    spectral_density = "spectral_density"


_PLOT_DOC = {**NOT_FOUND,
             200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                   "description": "A PNG of width x height pixels."},
             **error_responses(409, 422, s409="Nothing to draw yet: no finished epoch (or, for landscape, "
                               "none computed)", s422="An unknown kind, or a width / height outside the limits")}


@router.get("/{job_id}/plots/{kind}.png", response_class=Response, responses=_PLOT_DOC,
            summary="A plot of the job as PNG: loss, metric, grad_norms, update_ratios, landscape or spectral_density")
def get_plot(job_id: JobId, kind: PlotKind, session: SessionDep, owner: CurrentKey, settings: SettingsDep,
             width: Annotated[int, Query(description="Pixels; within plot_min_px .. plot_max_px.")] = 800,
             height: Annotated[int, Query(description="Pixels; within plot_min_px .. plot_max_px.")] = 500
             ) -> Response:
    """`loss`: train / validation loss, findings marked at their epochs; `metric`: accuracy, or MAE
    and R²; `grad_norms`: per-layer gradient norm over epochs on a log colour scale; `update_ratios`:
    per-layer update-to-weight ratio against the 1e-3 band; `landscape`: the line and the surface;
    `spectral_density`: the Hessian's eigenvalue density from the landscape, its mass below zero shaded."""
    for name, value in (("width", width), ("height", height)):
        if not settings.plot_min_px <= value <= settings.plot_max_px:
            raise problem(422, ["query", name], f"{name} {value} px is outside {settings.plot_min_px} .. "
                          f"{settings.plot_max_px} (plot_min_px .. plot_max_px)")
    job = get_owned(session, owner, Job, job_id, "job")
    from .. import plots   # matplotlib loads on the first plot, not at every API start (about 1 s)
    try:
        figure = _figure(plots, kind, session, job)
    except plots.NothingToDraw as e:
        raise problem(409, ["path", "kind"], f"job {job.id!r} ({job.status}) has no {kind.value} plot yet: {e}")
    return Response(plots.render(figure, width, height), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


def _figure(plots, kind: PlotKind, session: Session, job: Job):
    if kind is PlotKind.landscape:
        return plots.landscape_figure(landscape_of(session, job))
    if kind is PlotKind.spectral_density:
        return plots.spectral_density_figure(landscape_of(session, job))
    rows = session.scalars(select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.epoch))
    epochs = [metrics_entry(r) for r in rows]
    if kind is PlotKind.loss:
        return plots.loss_figure(epochs)
    if kind is PlotKind.metric:
        return plots.metric_figure(epochs, job.task)
    if kind is PlotKind.grad_norms:
        return plots.grad_norm_figure(epochs)
    return plots.update_ratio_figure(epochs)


def landscape_of(session: Session, job: Job) -> dict[str, Any] | None:
    """The result of the job's loss landscape ({line, surface, hessian}, the `result` of GET
    /v1/jobs/{id}/landscape), or None until one has succeeded."""
    row = session.get(Landscape, job.id)
    return row.result if row is not None and row.status == JobStatus.SUCCEEDED else None
