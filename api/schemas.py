"""Public response and request schemas. Table rows (core.tables) never leave the API directly."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, computed_field, field_validator

from core.jobspec import JobRequest, Label, openapi_friendly
from core.lifecycle import JobStatus
from core.tables import DATASET_KINDS, Dataset, Job, as_utc
from engine.text import LANGUAGE_MODEL, validation_tokens
from core.workers import WAITING_FOR

LIST_LIMIT_MAX = 100  # the most items one page of a list returns
MAX_TAGS = 20
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:=+/-]*$")]
_JOB_EXAMPLE = {
    "dataset_id": "paste-the-id-from-POST-/v1/datasets",
    "tags": ["swagger"],        # no name: Execute twice makes no second job of a name the README lists by
    "model": {"layers": [
        {"type": "linear", "out_features": 32},
        {"type": "relu"},
        {"type": "linear", "out_features": 3}]},
    "loss": "cross_entropy",
    "optimizer": {"type": "adam", "lr": 0.01},
    "epochs": 20, "batch_size": 32, "validation_split": 0.2, "seed": 0, "device": "auto"}
_DATASET_EXAMPLE = {
    "id": "3f1c2a9e-8d0b-4b8e-9c55-2f8e2a1b7c10", "name": "iris.csv", "format": "csv",
    "task": "classification", "task_inferred": True,
    "task_reason": "target column 'species' holds text with 3 distinct values in 150 rows: classes",
    "n_rows": 150, "input_shape": [4], "n_outputs": 3,
    "classes": ["setosa", "versicolor", "virginica"], "target": "species",
    "feature_names": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
    "size_bytes": 4551, "created_at": "2026-11-23T20:45:00Z", "kind": "table", "tokenizer": None,
    "vocab_size": None, "n_tokens": None, "validation_tokens": None}
DEFAULT_VALIDATION_SPLIT = JobRequest.model_fields["validation_split"].default


class ProblemItem(BaseModel):
    type: str = Field(description="What kind of problem: missing, json_invalid, shape_mismatch, limit_exceeded, ...")
    loc: list[str | int] = Field(description="Where: ['body', 'model', 'layers', 2], ['path', 'job_id'], ...")
    msg: str = Field(description="What is wrong, and what would be valid.")
    input: Any = Field(None, description="The value at fault, when short.")


class ErrorBody(BaseModel):
    """Every error's body. A 422's detail lists each problem; other statuses carry one message."""
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"detail": "job '3f1c2a9e-8d0b-4b8e-9c55-2f8e2a1b7c10' not found"},
        {"detail": [{"type": "greater_than", "loc": ["body", "epochs"], "msg": "epochs: Input should be "
                     "greater than or equal to 1 (got 0)", "input": 0}]}]})

    detail: str | list[ProblemItem]


class TokenizerPublic(BaseModel):
    """engine.text.Tokenizer as stored with the dataset: Tokenizer.from_dict(this) rebuilds it."""
    kind: Literal["byte", "char"] = Field(description="byte: 256 ids, one per UTF-8 byte; char: one id per "
                                                      "character of `chars`.")
    vocab_size: int = Field(description="Ids of text: 256 for byte, len(chars) for char.")
    pad_id: int | None = Field(description="Rows padded to one length: pad_id = vocab_size (so embeddings "
                                           "need vocab_size + 1); null for a text's token stream.")
    chars: str | None = Field(None, description="char: the vocabulary, sorted by code point; id = position.")


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_DATASET_EXAMPLE]})

    id: str
    name: str
    format: Literal["csv", "npz", "txt"]
    kind: Literal[DATASET_KINDS] = Field(description=(
        "table (input_shape [F]), image ([C, H, W]), language_model (a text's token stream: each next token "
        "is the target) or sequence_classification (rows of T token ids, input_shape [T], and a class each)."))
    task: Literal["classification", "regression", "language_model"]
    task_inferred: bool = Field(description="True: inferred from the target; false: given with the upload.")
    task_reason: str | None = Field(description="Why this task: what the target holds, or that it was given.")
    n_rows: int = Field(description="Rows; a language_model's: its tokens.")
    input_shape: list[int] = Field(description="Shape of one sample: [F], [C, H, W] or [T] ids; [] for a "
                                               "language_model (the job chooses the context length).")
    n_outputs: int = Field(description="Number of classes (a language_model's: its vocabulary), or of "
                                       "regression targets.")
    classes: list[Any] | None = Field(description="Original labels, sorted; class id = index.")
    target: str | None = Field(description="The CSV target column (NPZ: always array y).")
    feature_names: list[str] | None = Field(description="Feature columns; a sequence_classification CSV's: "
                                                        "its text column.")
    tokenizer: TokenizerPublic | None = Field(description="How text became ids; null for numbers, and for an "
                                                          "NPZ of ids.")
    vocab_size: int | None = Field(description=(
        "Sequence kinds: every id lies in [0, vocab_size): an embedding's num_embeddings (a padded "
        "tokenizer's pad id included, so its vocab_size + 1)."))
    size_bytes: int = Field(description="Size of the uploaded file.")
    created_at: UtcDatetime

    @computed_field(description="A language_model's tokens (its n_rows); null for other kinds.")
    @property
    def n_tokens(self) -> int | None:
        return self.n_rows if self.kind == LANGUAGE_MODEL else None

    @computed_field(description=(
        f"A language_model's tokens in the validation tail at the default validation_split "
        f"({DEFAULT_VALIDATION_SPLIT}): round(n_tokens × validation_split), the end of the text, never "
        "shuffled. Null for other kinds."))
    @property
    def validation_tokens(self) -> int | None:
        return validation_tokens(self.n_rows, DEFAULT_VALIDATION_SPLIT) if self.kind == LANGUAGE_MODEL else None


class DatasetList(BaseModel):
    items: list[DatasetPublic]
    total: int
    limit: int
    offset: int


class Progress(BaseModel):
    epoch: int = Field(description="Epochs finished so far.")
    epochs: int
    step: int
    total_steps: int | None
    fraction: float = Field(ge=0, le=1)


class JobError(BaseModel):
    code: str
    message: str


class FindingLayer(BaseModel):
    key: str = Field(description="The layer's state_dict prefix: its index, or its name in a DAG.")
    type: str


class Finding(BaseModel):
    """What a diagnostics rule found (docs/diagnostics.md lists the rules)."""
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 7, "code": "divergence", "severity": "error", "epoch": 1, "step": 3, "layer": None,
        "value": 1.4e6, "threshold": 10.0, "message": "the training loss is 1.89e+03, 1.4e+06 times the loss at "
        "step 0 (1.3): training diverged; ...", "hint": "lower lr (10x smaller to start), add grad_clip_norm, "
        "or use adam"}]})

    id: int = Field(description="Increases in the order the job's findings were found.")
    code: str = Field(description="The rule: vanishing_gradient, dead_relu, divergence, ...")
    severity: Literal["info", "warning", "error"]
    epoch: int = Field(description="The epoch it was found at; 0: at initialization, before any update.")
    step: int
    layer: FindingLayer | None = Field(description="The layer it is about; null for the whole run.")
    value: float | None = Field(description="What was measured (null where there is no finite number).")
    threshold: float | None = Field(description="The threshold it crossed.")
    message: str = Field(description="What was measured, in the seed's terms.")
    hint: str = Field(description="What usually fixes it.")


class FindingCounts(BaseModel):
    info: int = 0
    warning: int = 0
    error: int = 0


class FindingsSummary(BaseModel):
    counts: FindingCounts
    latest: Finding | None


class FindingList(BaseModel):
    job_id: str
    items: list[Finding]
    total: int
    limit: int
    offset: int


def _job_schema(schema: dict[str, Any]) -> None:
    openapi_friendly(schema)
    schema["examples"] = [_JOB_EXAMPLE]


class JobSubmit(JobRequest):
    """A training job, with an optional name and tags to find it by."""
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_job_schema)

    name: Label | None = Field(None, description="A label for lists and dashboards; need not be unique.")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS,
                            description="Up to 20 tags (letters, digits and _.:=+/-), to filter lists by.")

    @field_validator("tags")
    @classmethod
    def _unique(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(tags))

    def request(self) -> dict[str, Any]:
        """The training request as stored on the job (name and tags live in their own columns)."""
        return self.model_dump(mode="json", exclude={"name", "tags"})


class JobPublic(BaseModel):
    id: str
    name: str | None
    tags: list[str]
    dataset_id: str | None = Field(description="Null once the dataset has been deleted.")
    status: JobStatus
    device: Literal["auto", "cpu", "cuda"]
    queue: str
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    attempts: int
    cancel_requested: bool
    worker_host: str | None
    worker_device: str | None
    progress: Progress
    latest_metrics: dict[str, Any] | None
    result: dict[str, Any] | None
    error: JobError | None
    waiting_for: str | None = Field(None, description="While no live worker can take the job: the kind it "
                                    "waits for (\"gpu worker\"); it fails as no_worker if none comes in time.")
    n_parameters: int
    request: dict[str, Any] = Field(description="The submitted job, with defaults filled in.")
    sweep_id: str | None = Field(None, description="The sweep this job is a trial of.")
    landscape: JobStatus | None = Field(None, description="The status of the job's loss landscape "
                                        "(GET /v1/jobs/{id}/landscape); null when none was asked for.")
    findings: FindingsSummary = Field(description="The diagnostics rules' findings by severity, and the "
                                      "latest; GET /v1/jobs/{id}/findings lists them.")
    init_report: dict[str, Any] | None = Field(description="At step 0, before any update: per layer the "
                                               "activation std and the gradient std, and their ratio across "
                                               "depth (docs/diagnostics.md).")

    @classmethod
    def from_row(cls, job: Job) -> "JobPublic":
        return cls.model_validate(job_fields(job))


def job_fields(job: Any) -> dict[str, Any]:
    """JobPublic's fields from a Job row: an ORM object or a Core row (the fast status read)."""
    request = job.request
    return {
        "id": job.id, "name": job.name, "tags": job.tags or [], "dataset_id": job.dataset_id, "status": job.status, "device": job.device,
        "queue": job.queue, "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "attempts": job.attempts, "cancel_requested": bool(job.cancel_requested),
        "worker_host": job.worker_host, "worker_device": job.worker_device,
        "progress": {"epoch": job.epoch, "epochs": int(request.get("epochs", 0)), "step": job.step,
                     "total_steps": job.total_steps, "fraction": min(max(float(job.fraction), 0.0), 1.0)},
        "latest_metrics": job.latest_metrics, "result": job.result,
        "error": {"code": job.error_code, "message": job.error_message or ""} if job.error_code else None,
        "waiting_for": WAITING_FOR.get(job.queue) if job.waiting_since is not None and job.status == "queued"
        else None,
        "n_parameters": job.n_parameters, "request": request, "sweep_id": job.sweep_id,
        "landscape": getattr(job, "landscape_status", None),
        "findings": job.findings_summary or NO_FINDINGS, "init_report": job.init_report,
    }


NO_FINDINGS = {"counts": {"info": 0, "warning": 0, "error": 0}, "latest": None}


HEAVY_JOB_FIELDS = ("request", "init_report")   # in lists only when ?fields= names them


class JobSummary(JobPublic):
    """A job as a list shows it: JobPublic without its heavy fields unless `?fields=` names them
    (a page of 100 full jobs was megabytes); GET /v1/jobs/{id} always has them."""
    request: dict[str, Any] | None = Field(None, description="The submitted job; null unless fields=request.")
    init_report: dict[str, Any] | None = Field(None, description="The step-0 report; null unless "
                                               "fields=init_report.")

    @classmethod
    def from_row_with(cls, job: Job, fields: set[str]) -> "JobSummary":
        return cls.model_validate({**job_fields(job), **{f: None for f in HEAVY_JOB_FIELDS if f not in fields}})


class JobList(BaseModel):
    items: list[JobSummary]
    total: int
    limit: int
    offset: int


def metrics_entry(row: Any) -> dict[str, Any]:
    """One finished epoch as the API shows it, from a job_metrics row (ORM object or Core row)."""
    m = row.metrics
    return {**m, "epoch": row.epoch, "train_loss": m.get("train_loss", row.train_loss),
            "val_loss": m.get("val_loss", row.val_loss)}


class MetricsPublic(BaseModel):
    job_id: str
    epochs: list[dict[str, Any]] = Field(description="One metrics dict per finished epoch, in order: "
                                                     "train/val loss, accuracy or MAE/R², gradient health.")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}]})

    inputs: list[Any] = Field(min_length=1, description="Rows shaped like the dataset's input_shape: "
                                                        "[F] numbers, or [C][H][W] nested lists; for a sequence "
                                                        "classifier trained on texts, the texts themselves "
                                                        "(tokenized and padded as its dataset was).")
    columns: list[str] | None = Field(None, min_length=1, max_length=10_000, description=(
        "A CSV dataset's rows by name: the names of the rows' values (the CSV's header). The values are "
        "put in the training order by name; a column that is not a feature (the target left in the file) "
        "or a missing one is a 422 naming it."))


class PredictResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "outputs": [[4.1, 0.2, -3.0]], "probabilities": [[0.98, 0.02, 0.0]], "classes": ["setosa"]}]})

    outputs: list[Any] = Field(description="The network's raw outputs (logits for classification).")
    probabilities: list[list[float]] | None = Field(
        None, description="Classification: per class, softmax of the logits (bce_with_logits: "
                          "[1 - sigmoid, sigmoid]).")
    classes: list[Any] | None = Field(None, description="Classification: the predicted original label per row.")


def dataset_public(row: Dataset) -> DatasetPublic:
    return DatasetPublic.model_validate(row)
