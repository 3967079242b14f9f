"""SQLAlchemy 2 tables, shared by api/ and worker/. Changing them means a new migration.

Statuses and the moves between them are core.lifecycle's; rows here only hold them."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, bindparam, false, select)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

from engine.tasks import LANGUAGE_MODEL


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC), PostgreSQL aware ones: both as aware UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def new_id() -> str:
    return str(uuid.uuid4())


# every id we hand out is new_id()'s: a malformed one is refused before any SQL (PostgreSQL
# rejects a NUL byte in a string parameter with an error, SQLite just finds nothing)
ID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # HMAC-SHA256 of the key, hex
    prefix: Mapped[str] = mapped_column(String(16))                 # first characters, for display
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


# what a dataset's rows are; a dataset's kind follows from its columns (Dataset.kind)
TABLE, IMAGE, SEQUENCE_CLASSIFICATION = "table", "image", "sequence_classification"
DATASET_KINDS = (TABLE, IMAGE, LANGUAGE_MODEL, SEQUENCE_CLASSIFICATION)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(8))             # csv | npz | txt
    task: Mapped[str] = mapped_column(String(16))              # classification | regression | language_model
    n_rows: Mapped[int] = mapped_column(Integer)               # a language_model's: its tokens
    input_shape: Mapped[list[Any]] = mapped_column()           # per sample: [F], [C, H, W], [T] ids; [] for text
    n_outputs: Mapped[int] = mapped_column(Integer)            # classes (a text's: its vocabulary), or targets
    target: Mapped[str | None] = mapped_column(String(200))    # CSV target column name
    feature_names: Mapped[list[Any] | None] = mapped_column(default=None)
    classes: Mapped[list[Any] | None] = mapped_column(default=None)  # original labels, index = class id
    task_inferred: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    task_reason: Mapped[str | None] = mapped_column(Text, default=None)  # why this task (inferred or given)
    size_bytes: Mapped[int] = mapped_column(Integer)
    stored_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)  # its tensor file (quota)
    path: Mapped[str] = mapped_column(String(500))             # tensor file, relative to artifacts_dir
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    tokenizer: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # engine.text.Tokenizer.to_dict()
    vocab_size: Mapped[int | None] = mapped_column(Integer, default=None)   # token ids lie in [0, vocab_size)

    @property
    def kind(self) -> str:
        """language_model (a token stream), sequence_classification (rows of ids), image or table."""
        if self.task == LANGUAGE_MODEL:
            return LANGUAGE_MODEL
        if self.vocab_size is not None:
            return SEQUENCE_CLASSIFICATION
        return IMAGE if len(self.input_shape) == 3 else TABLE


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
                      Index("ix_jobs_owner_created", "owner_id", "created_at"),
                      Index("ix_jobs_owner_name", "owner_id", "name"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    # the job's tags, read with the row (the status poll stays one SELECT); job_tags indexes them
    tags: Mapped[list[Any] | None] = mapped_column(default=None)
    job_tags: Mapped[list["JobTag"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16))            # core.lifecycle.JobStatus
    request: Mapped[dict[str, Any]] = mapped_column()          # the validated submission: model, loss, ...
    device: Mapped[str] = mapped_column(String(8))             # auto | cpu | cuda (as requested)
    queue: Mapped[str] = mapped_column(String(16))             # broker queue it is sent to
    n_parameters: Mapped[int] = mapped_column(Integer)
    # what predict needs, copied from the dataset at submit (the dataset may be deleted later)
    input_shape: Mapped[list[Any] | None] = mapped_column(default=None)  # per sample: [F] or [C, H, W]
    task: Mapped[str | None] = mapped_column(String(16), default=None)   # classification | regression
    classes: Mapped[list[Any] | None] = mapped_column(default=None)      # original labels, index = class id
    tokenizer: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # a text dataset's (engine.text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # worker starts so far
    max_attempts: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)   # last handed to the broker
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    worker_host: Mapped[str | None] = mapped_column(String(200), default=None)
    worker_device: Mapped[str | None] = mapped_column(String(100), default=None)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, default=None)
    fraction: Mapped[float] = mapped_column(Float, default=0.0)
    latest_metrics: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # summary of the finished fit
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    checkpoint_path: Mapped[str | None] = mapped_column(String(500), default=None)
    weights_path: Mapped[str | None] = mapped_column(String(500), default=None)
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True,
                                                 default=None)  # set when the job is a sweep's trial
    artifact_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)   # its weights file (quota)
    # set while no live worker consumes the job's queue (core.workers); it fails after worker_wait_s
    waiting_since: Mapped[datetime | None] = mapped_column(default=None)
    # engine.diagnostics: the initialization report at step 0, and {"counts": {severity: n}, "latest":
    # finding} of job_findings, kept on the row so the status poll stays one SELECT
    init_report: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    findings_summary: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class Worker(Base):
    """A live worker process, written by its reconciler thread every pass (core.workers)."""
    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)   # host:pid
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[Any]] = mapped_column()                      # broker queues it consumes
    device: Mapped[str] = mapped_column(String(100))                 # cpu | cuda (what it trains on)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class RankSlot(Base):
    """One rank process a worker host may run (core.rank_slots); held by a job's attempt while its ranks run.
    A slot whose job is no longer running as that attempt is free (a worker that died leaves no lock)."""
    __tablename__ = "rank_slots"
    host: Mapped[str] = mapped_column(String(200), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    attempt: Mapped[int | None] = mapped_column(Integer)
    reserved_at: Mapped[datetime | None] = mapped_column()


class JobTag(Base):
    """One row per tag of a job: what `GET /v1/jobs?tag=` filters on, the same on SQLite and PostgreSQL."""
    __tablename__ = "job_tags"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class JobMetric(Base):
    """One row per finished epoch: the metrics dict of engine.fit, gradient health included."""
    __tablename__ = "job_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Sweep(Base):
    """A hyperparameter search: a job template, a parameter space, a method and a pruner.
    Its trials are jobs (Job.sweep_id); the search state is in SweepTrial (core.sweeps)."""
    __tablename__ = "sweeps"
    __table_args__ = (Index("ix_sweeps_owner_created", "owner_id", "created_at"),
                      Index("ix_sweeps_status", "status"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    name: Mapped[str] = mapped_column(String(200))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16))            # core.sweeps.SweepStatus
    request: Mapped[dict[str, Any]] = mapped_column()          # the validated submission (core.sweeps.SweepRequest)
    max_trials: Mapped[int] = mapped_column(Integer)
    max_concurrent: Mapped[int] = mapped_column(Integer)
    trials_created: Mapped[int] = mapped_column(Integer, default=0)  # next trial's number
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)


class SweepTrial(Base):
    """One trial of a sweep, as the search sees it: the point it was given (the user's values and
    Optuna's encoding), Optuna's per-trial system attributes (grid id, ASHA rungs) and a summary
    of the sweep metric so far (the curve itself is the job's job_metrics rows). Kept when its
    job is deleted, so trial numbers never shift."""
    __tablename__ = "sweep_trials"
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), unique=True)
    params: Mapped[dict[str, Any]] = mapped_column()           # {path: value} as the user wrote them
    optuna_params: Mapped[dict[str, Any]] = mapped_column()    # {path: Optuna's value} (choices by index)
    system_attrs: Mapped[dict[str, Any]] = mapped_column()
    best_value: Mapped[float | None] = mapped_column(Float, default=None)   # the best finite metric value
    best_epoch: Mapped[int | None] = mapped_column(Integer, default=None)   # its epoch (the earliest on ties)
    last_epoch: Mapped[int | None] = mapped_column(Integer, default=None)   # the latest epoch reported
    last_value: Mapped[float | None] = mapped_column(Float, default=None)   # its value (null: not finite)
    pruned_epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
class JobFinding(Base):
    """One finding of a diagnostics rule (engine.diagnostics.findings); ids increase in the order found."""
    __tablename__ = "job_findings"
    __table_args__ = (Index("ix_job_findings_job_id_id", "job_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)                # 0: at initialization
    step: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(String(64))              # the rule
    severity: Mapped[str] = mapped_column(String(16))          # info | warning | error
    layer_key: Mapped[str | None] = mapped_column(String(64), default=None)
    layer_type: Mapped[str | None] = mapped_column(String(32), default=None)
    value: Mapped[float | None] = mapped_column(Float, default=None)
    threshold: Mapped[float | None] = mapped_column(Float, default=None)
    message: Mapped[str] = mapped_column(Text)
    hint: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Landscape(Base):
    """The loss landscape analysis of a succeeded job (one per job; a new request replaces a finished one).
    Its moves between statuses (core.lifecycle.JobStatus values) are core.landscapes'."""
    __tablename__ = "landscapes"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    options: Mapped[dict[str, Any]] = mapped_column()          # points, grid, samples, ... as validated
    queue: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    fraction: Mapped[float] = mapped_column(Float, default=0.0)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)   # line, surface, hessian
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    worker_host: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)



class Webhook(Base):
    """A key's subscription: events (core.webhooks.EVENTS) POSTed to url, signed with secret."""
    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[Any]] = mapped_column()
    secret: Mapped[str] = mapped_column(String(256))           # the HMAC key: kept as given, it signs
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """The outbox: one event for one webhook, written in the transaction of the change it reports; its
    moves (pending -> delivered | failed) and attempts are core.webhooks.delivery's."""
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_webhook_created", "webhook_id", "created_at"),
                      Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)   # the delivery id header
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)                    # the exact JSON sent, the same on every attempt
    status: Mapped[str] = mapped_column(String(16))            # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempt_log: Mapped[list[Any]] = mapped_column(default=list)   # [{attempt, at, status_code, error, ms}]
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)   # a worker's lease while it sends
    sent_at: Mapped[datetime | None] = mapped_column(default=None)        # last handed to the broker
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

# the status of a job's landscape (null: none asked for), read with the job in the same SELECT: a
# primary-key subquery, so a page can tell whether there is one to fetch without a 404
LANDSCAPE_STATUS = select(Landscape.status).where(Landscape.job_id == Job.id).scalar_subquery()
Job.landscape_status = column_property(LANDSCAPE_STATUS)
# one job's row as the hot reads take it (the status poll, the events stream): Core, no ORM objects
JOB_ROW = select(Job.__table__, LANDSCAPE_STATUS.label("landscape_status")).where(Job.id == bindparam("job_id"))
