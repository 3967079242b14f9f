"""/v1/datasets: upload (multipart, streamed), list, read, delete."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select

from core import artifacts
from core.db import get_sessionmaker
from core.lifecycle import ACTIVE
from core.settings import Settings
from core.sweeps import SweepStatus
from core.tables import Dataset, Job, Sweep, new_id
from engine.data import TASKS

from ..deps import CurrentKey, SessionDep, SettingsDep, get_owned
from ..errors import problem
from ..ingest import DatasetError, Limits, ParsedDataset, parse_dataset
from ..schemas import LIST_LIMIT_MAX, DatasetList, DatasetPublic, dataset_public
from ..upload import UploadError, receive_upload

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
NOT_FOUND = {404: {"description": "No such dataset for this key"}}

_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "CSV with a header row (numeric features; the target may hold text "
                                "labels), or NPZ with arrays X (N×F or N×C×H×W) and y."},
        "name": {"type": "string", "maxLength": 200, "description": "Default: the file name."},
        "target": {"type": "string", "description": "CSV target column. Default: the last column."},
        "task": {"type": "string", "enum": list(TASKS),
                 "description": "Default: inferred (few distinct integer or text values: classification)."},
    }}}}}}


def _form_fields(fields: dict[str, str], filename: str | None) -> tuple[str, str | None, str | None]:
    unknown = sorted(set(fields) - {"name", "target", "task"})
    if unknown:
        raise problem(422, ["body", unknown[0]], f"unknown form field {unknown[0]!r}; valid: file, name, "
                      "target, task", "extra_forbidden")
    name = (fields.get("name") or "").strip() or filename or "dataset"
    if len(name) > 200:
        raise problem(422, ["body", "name"], f"name is {len(name)} characters; at most 200")
    task = (fields.get("task") or "").strip() or None
    if task is not None and task not in TASKS:
        raise problem(422, ["body", "task"], f"task {task!r} is not one of {list(TASKS)}", "enum")
    target = (fields.get("target") or "").strip() or None
    return name, target, task


def _store(settings: Settings, owner_id: str, name: str, size: int, parsed: ParsedDataset) -> Dataset:
    dataset_id = new_id()
    relpath = artifacts.dataset_relpath(dataset_id)
    artifacts.write_atomic(artifacts.resolve(settings, relpath), parsed.to_safetensors())
    row = Dataset(id=dataset_id, owner_id=owner_id, name=name, format=parsed.format, task=parsed.task,
                  n_rows=parsed.n_rows, input_shape=parsed.input_shape, n_outputs=parsed.n_outputs,
                  target=parsed.target, feature_names=parsed.feature_names, classes=parsed.classes,
                  size_bytes=size, path=relpath)
    try:
        with get_sessionmaker(settings.database_url)() as session:
            session.add(row)
            session.commit()
    except BaseException:
        artifacts.resolve(settings, relpath).unlink(missing_ok=True)
        raise
    return row


@router.post("", status_code=201, response_model=DatasetPublic, openapi_extra=_UPLOAD_BODY,
             summary="Upload a dataset (CSV or NPZ)",
             responses={413: {"description": "The file or its rows exceed a limit"},
                        415: {"description": "Not multipart/form-data"}})
async def upload_dataset(request: Request, response: Response, owner: CurrentKey,
                         settings: SettingsDep) -> DatasetPublic:
    try:
        upload = await receive_upload(request, settings.data_dir / "uploads", settings.max_upload_bytes)
    except UploadError as e:
        raise problem(e.status, ["body", e.field or "file"], e.message)
    try:
        if upload.path is None:
            raise problem(422, ["body", "file"], "field 'file' is required: upload the dataset as a "
                          "multipart file part (curl -F file=@data.csv)", "missing")
        name, target, task = _form_fields(upload.fields, upload.filename)
        limits = Limits(settings.max_rows, settings.max_features, settings.max_upload_bytes)
        try:
            parsed = await run_in_threadpool(parse_dataset, upload.path, upload.filename, target=target,
                                             task=task, limits=limits)
        except DatasetError as e:
            raise problem(e.status, ["body", e.field], e.message, "invalid_dataset")
        row = await run_in_threadpool(_store, settings, owner.id, name, upload.size, parsed)
    finally:
        upload.discard()
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    return dataset_public(row)


@router.get("", response_model=DatasetList, summary="List this key's datasets, newest first")
def list_datasets(session: SessionDep, owner: CurrentKey,
                  limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 20,
                  offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> DatasetList:
    mine = Dataset.owner_id == owner.id
    total = session.scalar(select(func.count()).select_from(Dataset).where(mine))
    rows = session.scalars(select(Dataset).where(mine).order_by(Dataset.created_at.desc(), Dataset.id)
                           .limit(limit).offset(offset))
    return DatasetList(items=[dataset_public(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=NOT_FOUND, summary="Read a dataset")
def get_dataset(dataset_id: str, session: SessionDep, owner: CurrentKey) -> DatasetPublic:
    return dataset_public(get_owned(session, owner, Dataset, dataset_id, "dataset"))


@router.delete("/{dataset_id}", status_code=204, summary="Delete a dataset and its file",
               responses={**NOT_FOUND, 409: {"description": "Jobs on it are still queued or running"}})
def delete_dataset(dataset_id: str, session: SessionDep, owner: CurrentKey, settings: SettingsDep) -> Response:
    row = get_owned(session, owner, Dataset, dataset_id, "dataset")
    active = session.scalar(select(func.count()).select_from(Job).where(
        Job.dataset_id == dataset_id, Job.status.in_(ACTIVE)))
    if active:
        raise problem(409, ["path", "dataset_id"], f"dataset {dataset_id!r} has {active} queued or running "
                      "job(s); cancel them or wait for them to finish", "conflict")
    sweeps = session.scalar(select(func.count()).select_from(Sweep).where(
        Sweep.dataset_id == dataset_id, Sweep.status == SweepStatus.RUNNING))
    if sweeps:
        raise problem(409, ["path", "dataset_id"], f"dataset {dataset_id!r} is the data of {sweeps} running "
                      "sweep(s), which will make more trials on it; cancel them or wait for them to finish",
                      "conflict")
    path = Path(row.path)
    session.delete(row)
    session.commit()
    artifacts.resolve(settings, str(path)).unlink(missing_ok=True)
    return Response(status_code=204)
