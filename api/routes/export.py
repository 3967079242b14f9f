"""Leaving with the model: a succeeded job as an ONNX graph (GET /v1/jobs/{id}/export.onnx), and any job
as a plain PyTorch script that trains it again (GET /v1/jobs/{id}/script.py). docs/export.md."""
from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Request, Response
from safetensors import safe_open

from core.tables import Dataset, Job

from ..deps import CurrentKey, JobId, SessionDep, SettingsDep, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..export.onnx_graph import UnsupportedLayer, to_onnx
from ..export.script import render_script
from ..strict_json import StrictJSONRoute
from .jobs import NOT_FOUND
from .results import succeeded_weights_path

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/jobs", tags=["jobs"],
                   responses=error_responses(*EVERY_OPERATION))
ONNX_MEDIA_TYPE = "application/octet-stream"    # ONNX has no registered media type
PROTOBUF_LIMIT = 2**31 - 2**20      # a protobuf message stops at 2 GiB; this export keeps the weights inside


def _read_weights(path: Path) -> tuple[dict, list[int], dict]:
    """(the served spec, the input shape, the state_dict) a weights file carries in its metadata."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    return json.loads(meta["model_spec"]), json.loads(meta["input_shape"]), state


@router.get("/{job_id}/export.onnx", response_class=Response, summary="Download the trained network as ONNX",
            responses={**NOT_FOUND, **error_responses(409, s409="Not succeeded yet, or a layer ONNX export lacks"),
                       200: {"content": {ONNX_MEDIA_TYPE: {}}, "description": (
                           "ONNX (opset 17, float32): input 'input' (batch, *input_shape), int64 for token ids; "
                           "output 'output' (batch, *output_shape); the batch dimension is dynamic")}})
def export_onnx(job_id: JobId, session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> Response:
    job = get_owned(session, owner, Job, job_id, "job")
    path = succeeded_weights_path(job, settings, "it can be exported")
    spec, input_shape, state = _read_weights(path)
    size = sum(t.numel() * 4 for t in state.values())
    if size > PROTOBUF_LIMIT:
        raise problem(409, ["path", "job_id"], f"job {job.id!r} has {size} bytes of float32 weights; an ONNX "
                      f"file holds at most {PROTOBUF_LIMIT} inside it; download the weights instead")
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
    text = render_script(job.id, job.request, dataset.input_shape, dataset.task, dataset.n_rows, url)
    return Response(text, media_type="text/x-python; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="job_{job.id}.py"'})
