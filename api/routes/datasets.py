"""/v1/datasets: upload (multipart, streamed: CSV, NPZ or text), list, read, delete."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select

from core import artifacts, quota
from core.db import get_sessionmaker
from core.jobspec import describe_char, first_control_char
from core.lifecycle import ACTIVE, lock_owner
from core.settings import Settings
from core.sweeps import SweepStatus
from core.tables import Dataset, Job, Sweep, new_id
from engine import TASKS

from ..deps import CurrentKey, DatasetId, SessionDep, SettingsDep, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..strict_json import StrictJSONRoute
from ..ingest import TOKENIZERS, UPLOAD_KINDS, DatasetError, Limits, ParsedDataset, parse_dataset
from ..schemas import LIST_LIMIT_MAX, DatasetList, DatasetPublic, dataset_public
from ..upload import UploadError, receive_upload

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/datasets", tags=["datasets"],
                   responses=error_responses(*EVERY_OPERATION))
NOT_FOUND = error_responses(404, s404="No such dataset for this key")

INFER = "infer"
# Swagger UI fills each form field with its schema's first example, else its default, else a
# placeholder ("string", an enum's first value): an empty example and an "infer" default keep
# Execute-as-is uploading the file with the defaults the descriptions name
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "additionalProperties": False,
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "CSV with a header row (numeric features; the target may hold text labels); "
                                "NPZ with arrays X (N×F or N×C×H×W) and y; or UTF-8 text (a .txt name, or a "
                                "text/plain part), a language_model's training text. A CSV with text_column "
                                "holds texts and their labels: sequence_classification."},
        "name": {"type": "string", "maxLength": 200, "examples": [""],
                 "description": "Empty: the file name."},
        "target": {"type": "string", "examples": [""],
                   "description": "CSV target column. Empty: the last column (with text_column: the last "
                                  "other one)."},
        "task": {"type": "string", "enum": [INFER, *TASKS], "default": INFER,
                 "description": "infer: text, or at most max_inferred_classes (default 50) distinct "
                                "integers with two rows per value, is classification; other numbers are "
                                "regression. The response says what was inferred and why. Text files have "
                                "none (each next token is the target)."},
        "kind": {"type": "string", "enum": [INFER, *UPLOAD_KINDS], "default": INFER,
                 "description": "infer: text by its name or content type is a language_model; a CSV with "
                                "text_column is sequence_classification; otherwise a table or images by X's "
                                "shape. language_model reads any file as UTF-8 text. sequence_classification "
                                "takes an NPZ whose X holds integer token ids (N×T) and class labels y "
                                "(without it an integer X is a table of numbers)."},
        "tokenizer": {"type": "string", "enum": list(TOKENIZERS), "default": "byte",
                      "description": "Text (a text file, or a CSV's text_column). byte: 256 ids, one per "
                                     "UTF-8 byte, any text. char: one id per distinct character of the upload "
                                     "(at most max_char_vocab, default 1024), sorted; fewer ids per text. "
                                     "Stored with the dataset. byte, the default, goes with any file."},
        "text_column": {"type": "string", "examples": [""],
                        "description": "CSV only: the column holding text makes a sequence_classification "
                                       "dataset of two columns, the text and the target."},
        "max_length": {"type": "string", "examples": [""],
                       "description": "text_column only: ids per row; longer texts are cut, shorter ones "
                                      "padded with the tokenizer's pad_id. Empty: the longest text's, which "
                                      "must be within max_sequence_length (default 1024)."},
    }}}}}}
_FIELDS = ("name", "target", "task", "kind", "tokenizer", "text_column", "max_length")
# printable text: no control character, nor the format characters (core.jobspec.first_control_char)
PRINTABLE = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u08e2\\u180e\\u200b-\\u200f" \
            "\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u206f\\ufeff\\ufff9-\\ufffb]*$"
for _field in ("name", "target", "text_column"):
    _UPLOAD_BODY["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"][_field]["pattern"] = PRINTABLE
_UPLOAD_BODY["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["max_length"]["pattern"] = \
    "^\\s*[0-9]{0,9}\\s*$"


def _choice(fields: dict[str, str], field: str, valid: tuple[str, ...], infer: bool = True) -> str | None:
    """The field's value if one of `valid`; empty (and infer, where it is a choice) mean absent."""
    value = (fields.get(field) or "").strip()
    if not value or (infer and value == INFER):
        return None
    if value not in valid:
        choices = [INFER, *valid] if infer else list(valid)
        raise problem(422, ["body", field], f"{field} {value!r} is not one of {choices}", "enum")
    return value


def _form_fields(fields: dict[str, str], filename: str | None) -> tuple[str, dict[str, Any]]:
    """The dataset's name, and parse_dataset's keywords."""
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise problem(422, ["body", unknown[0]], f"unknown form field {unknown[0]!r}; valid: file, "
                      f"{', '.join(_FIELDS)}", "extra_forbidden")
    for field, value in [*fields.items(), ("file", filename or "")]:
        at = first_control_char(value)
        if at is not None:
            what = "the file name" if field == "file" else f"form field {field!r}"
            raise problem(422, ["body", field], f"{what} holds {describe_char(value[at])} at position {at}; "
                          "use printable text")
    name = (fields.get("name") or "").strip() or filename or "dataset"
    if len(name) > 200:
        raise problem(422, ["body", "name"], f"name is {len(name)} characters; at most 200")
    max_length = (fields.get("max_length") or "").strip() or None
    if max_length is not None:
        if not max_length.isdigit() or len(max_length) > 9:
            raise problem(422, ["body", "max_length"], f"max_length {max_length!r} is not a whole number of "
                          "ids per row", "int_parsing")
        max_length = int(max_length)
    return name, {"target": (fields.get("target") or "").strip() or None,
                  "task": _choice(fields, "task", TASKS), "kind": _choice(fields, "kind", UPLOAD_KINDS),
                  "tokenizer": _choice(fields, "tokenizer", TOKENIZERS, infer=False),
                  "text_column": (fields.get("text_column") or "").strip() or None, "max_length": max_length}


def _store(settings: Settings, owner_id: str, name: str, size: int, parsed: ParsedDataset) -> Dataset:
    """Write the tensor file and its row, if the key's storage quota has room (StorageFull if not)."""
    dataset_id, data = new_id(), parsed.to_safetensors()
    relpath = artifacts.dataset_relpath(dataset_id)
    row = Dataset(id=dataset_id, owner_id=owner_id, name=name, format=parsed.format, task=parsed.task,
                  n_rows=parsed.n_rows, input_shape=parsed.input_shape, n_outputs=parsed.n_outputs,
                  target=parsed.target, feature_names=parsed.feature_names, classes=parsed.classes,
                  task_inferred=parsed.task_inferred, task_reason=parsed.task_reason, size_bytes=size,
                  stored_bytes=len(data), path=relpath, tokenizer=parsed.tokenizer, vocab_size=parsed.vocab_size)
    with get_sessionmaker(settings.database_url)() as session:
        lock_owner(session, owner_id)          # parallel uploads of one key are counted one at a time
        quota.check(session, settings, owner_id, len(data))
        artifacts.write_atomic(artifacts.resolve(settings, relpath), data)
        try:
            session.add(row)
            session.commit()
        except BaseException:
            artifacts.resolve(settings, relpath).unlink(missing_ok=True)
            raise
    return row


@router.post("", status_code=201, response_model=DatasetPublic, openapi_extra=_UPLOAD_BODY,
             summary="Upload a dataset (CSV, NPZ or UTF-8 text)",
             responses=error_responses(413, 415, s413="The file, its rows, its arrays or its tokens exceed a "
                                       "limit, or the key's storage quota is full", s415="Not multipart/form-data"))
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
        name, options = _form_fields(upload.fields, upload.filename)
        limits = Limits(max_rows=settings.max_rows, max_features=settings.max_features,
                        max_bytes=settings.max_upload_bytes, max_inferred_classes=settings.max_inferred_classes,
                        max_text_tokens=settings.max_text_tokens, max_char_vocab=settings.max_char_vocab,
                        max_sequence_length=settings.max_sequence_length, max_vocab_size=settings.max_vocab_size)
        try:
            parsed = await run_in_threadpool(parse_dataset, upload.path, upload.filename, limits=limits,
                                             content_type=upload.content_type, **options)
        except DatasetError as e:
            raise problem(e.status, ["body", e.field], e.message, "invalid_dataset")
        try:
            row = await run_in_threadpool(_store, settings, owner.id, name, upload.size, parsed)
        except quota.StorageFull as e:
            raise problem(413, ["body", "file"], str(e))
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
def get_dataset(dataset_id: DatasetId, session: SessionDep, owner: CurrentKey) -> DatasetPublic:
    return dataset_public(get_owned(session, owner, Dataset, dataset_id, "dataset"))


@router.get("/{dataset_id}/file", response_class=FileResponse, summary="Download the dataset as it is trained on",
            responses={**NOT_FOUND, 200: {"content": {"application/octet-stream": {}}, "description": (
                "safetensors: X (N, *input_shape) and y (class ids or targets), or a text's token stream "
                "ids, as parsed from the upload; what a job's script.py reads")}})
def get_dataset_file(dataset_id: DatasetId, session: SessionDep, owner: CurrentKey,
                     settings: SettingsDep) -> FileResponse:
    row = get_owned(session, owner, Dataset, dataset_id, "dataset")
    path = artifacts.resolve(settings, row.path)
    if not path.is_file():
        raise problem(404, ["path", "dataset_id"], f"the tensor file of dataset {dataset_id!r} is missing from "
                      "the store; upload it again")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{dataset_id}.safetensors")


@router.delete("/{dataset_id}", status_code=204, summary="Delete a dataset and its file",
               responses={**NOT_FOUND, **error_responses(409, s409="Jobs on it are still queued or running")})
def delete_dataset(dataset_id: DatasetId, session: SessionDep, owner: CurrentKey,
                   settings: SettingsDep) -> Response:
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
