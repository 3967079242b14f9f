"""Leaving with the model: a succeeded job as an ONNX graph (GET /v1/jobs/{id}/export.onnx), and any job
as a plain PyTorch script that trains it again (GET /v1/jobs/{id}/script.py). docs/export.md."""
from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from safetensors import safe_open

from core.jobspec import JobRequest, served_spec
from core.tables import Dataset, Job

from ..deps import CurrentKey, JobId, SessionDep, SettingsDep, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..export.script import render_script
from ..strict_json import StrictJSONRoute
from .jobs import NOT_FOUND
from .results import succeeded_weights_path

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/jobs", tags=["jobs"],
                   responses=error_responses(*EVERY_OPERATION))
ONNX_MEDIA_TYPE = "application/octet-stream"    # ONNX has no registered media type
PROTOBUF_LIMIT = 2**31 - 2**20      # a protobuf message stops at 2 GiB; this export keeps the weights inside


def _network_of(job: Job, meta: dict[str, str]) -> tuple[Any, list[int]]:
    """(the served spec, the input shape) the weights' metadata names; a file written before it carried
    them falls back to the job's request and recorded input shape."""
    if "model_spec" in meta and "input_shape" in meta:
        return json.loads(meta["model_spec"]), json.loads(meta["input_shape"])
    if job.input_shape is None:
        raise problem(409, ["path", "job_id"], f"the weights of job {job.id!r} carry no network description and "
                      "the job no input shape; download the weights instead")
    try:
        request = JobRequest.model_validate(job.request)
    except ValueError:
        raise problem(409, ["path", "job_id"], f"the stored request of job {job.id!r} no longer validates, so "
                      "its network cannot be rebuilt; download the weights instead") from None
    return served_spec(request), request.input_shape(job.input_shape)


@router.get("/{job_id}/export.onnx", response_class=Response, summary="Download the trained network as ONNX",
            responses={**NOT_FOUND, **error_responses(409, s409="Not succeeded yet, or a layer ONNX export lacks"),
                       200: {"content": {ONNX_MEDIA_TYPE: {}}, "description": (
                           "ONNX (opset 17, float32): input 'input' (batch, *input_shape), int64 for token ids; "
                           "output 'output' (batch, *output_shape); the batch dimension is dynamic")}})
def export_onnx(job_id: JobId, session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> Response:
    job = get_owned(session, owner, Job, job_id, "job")
    path = succeeded_weights_path(job, settings, "it can be exported")
    with safe_open(str(path), "pt") as weights:
        meta = weights.metadata() or {}
        size = path.stat().st_size // (2 if meta.get("dtype") == "float64" else 1)    # as float32
        if size > PROTOBUF_LIMIT:
            raise problem(409, ["path", "job_id"], f"job {job.id!r} has about {size} bytes of float32 weights; "
                          f"an ONNX file holds at most {PROTOBUF_LIMIT} inside it; download the weights instead")
        state = {k: weights.get_tensor(k) for k in weights.keys()}
    spec, input_shape = _network_of(job, meta)
    from ..export.onnx_graph import UnsupportedLayer, to_onnx     # onnx costs 0.6 s: loaded by the first export
    try:
        model = to_onnx(spec, input_shape, state, graph_name=f"chainrule job {job.id}")
    except UnsupportedLayer as exc:
        raise problem(409, ["path", "job_id"], f"job {job.id!r}: {exc}")
    return Response(model.SerializeToString(), media_type=ONNX_MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{job.id}.onnx"'})


@router.get("/{job_id}/script.py", response_class=Response, summary="The job as a plain PyTorch training script",
            responses={**NOT_FOUND, **error_responses(409, s409="The job's dataset was deleted"),
                       200: {"content": {"text/x-python": {}}, "description": (
                           "One file using torch, numpy and safetensors: the network as torch.nn modules, "
                           "the split, batches, seeds, loss, optimizer and schedule of the job")}})
def export_script(job_id: JobId, request: Request, session: SessionDep, owner: CurrentKey) -> Response:
    job = get_owned(session, owner, Job, job_id, "job")
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
    if dataset is None:
        raise problem(409, ["path", "job_id"], f"the dataset of job {job.id!r} was deleted; the script trains on "
                      "it, so upload it again and submit the job anew")
    url = f"{str(request.base_url).rstrip('/')}/v1/datasets/{dataset.id}/file"
    try:
        text = render_script(job.id, job.request, dataset.input_shape, dataset.task, dataset.n_rows, url)
    except ValueError as exc:     # a stored request that no longer validates, or no longer fits its dataset
        raise problem(409, ["path", "job_id"], f"job {job.id!r} cannot be written out: {exc}") from None
    return Response(text, media_type="text/x-python; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="job_{job.id}.py"'})
