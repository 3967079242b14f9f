"""GET /v1/jobs/{id}/split: which rows a job trained on and which it validated on.

The split is engine.data.split_indices of the dataset's row count, the job's validation_split and its
seed, the one fit makes (and preprocessing.standardize takes its statistics from the training rows);
a text's validation part is the contiguous tail of its token stream (engine.train.windows).
"""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from core.admission import training_rows
from core.tables import Dataset, Job
from engine.data import split_indices
from engine.text import LANGUAGE_MODEL

from ..deps import CurrentKey, JobId, SessionDep, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..strict_json import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/jobs", tags=["jobs"],
                   responses=error_responses(*EVERY_OPERATION))


class SplitPublic(BaseModel):
    job_id: str
    dataset_id: str
    unit: Literal["rows", "tokens"] = Field(description=(
        "rows: the lists index the dataset's rows from 0, in upload order (a CSV's data lines after the "
        "header, an NPZ's first axis); tokens: a text's token stream, split into two ranges."))
    n: int = Field(description="Rows of the dataset (a text's: its tokens).")
    validation_split: float
    seed: int
    train_rows: list[int] | None = Field(None, description="The rows fit trained on, ascending (unit rows).")
    validation_rows: list[int] | None = Field(None, description="The rows held out for validation, ascending "
                                                                "(unit rows).")
    train_range: list[int] | None = Field(None, description="[start, stop) of the training tokens (unit tokens).")
    validation_range: list[int] | None = Field(None, description="[start, stop) of the validation tail "
                                                                 "(unit tokens).")

    model_config = {"json_schema_extra": {"examples": [{
        "job_id": "4f9c2a8e-1d2b-4c3a-9e8f-0a1b2c3d4e5f", "dataset_id": "0b6f1c2d-3e4f-4a5b-8c9d-1e2f3a4b5c6d",
        "unit": "rows", "n": 10, "validation_split": 0.2, "seed": 0, "train_rows": [0, 1, 2, 4, 5, 6, 7, 9],
        "validation_rows": [3, 8]}]}}


@router.get("/{job_id}/split", response_model=SplitPublic, response_model_exclude_none=True,
            responses=error_responses(404, 409, s404="No such job for this key",
                                      s409="The job's dataset was deleted, so its row count is unknown"),
            summary="Which rows the job trained on and which it validated on")
def get_split(job_id: JobId, session: SessionDep, owner: CurrentKey) -> SplitPublic:
    job = get_owned(session, owner, Job, job_id, "job")
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
    if dataset is None:
        raise problem(409, ["path", "job_id"], f"the dataset of job {job.id!r} was deleted, so its row count "
                      "is unknown; the split is engine.data.split_indices(n_rows, validation_split, seed)")
    split, seed = float(job.request["validation_split"]), int(job.request["seed"])
    common = {"job_id": job.id, "dataset_id": dataset.id, "n": dataset.n_rows, "validation_split": split, "seed": seed}
    if dataset.task == LANGUAGE_MODEL:
        n_train = training_rows(dataset.n_rows, split)
        return SplitPublic(unit="tokens", train_range=[0, n_train], validation_range=[n_train, dataset.n_rows],
                           **common)
    train, validation = split_indices(dataset.n_rows, split, seed)
    return SplitPublic(unit="rows", train_rows=train.sort().values.tolist(),
                       validation_rows=validation.sort().values.tolist(), **common)
