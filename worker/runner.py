"""One attempt at one job: claim, load, build, resume, fit, store the outcome.

The task (worker.app) calls `run_job(settings, job_id, device)`; everything here re-reads the
database, so a duplicate or stale message is harmless, and never leaves a job 'running'
behind it: every way out of `_train` ends in a fenced UPDATE to a final status (or back to
'queued' when the worker is shutting down).
"""
from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save as save_safetensors
from sqlalchemy import delete, update

from chainrule import artifacts
from chainrule.db import session_scope
from chainrule.jobspec import JobRequest
from chainrule.models import Dataset, Job, JobMetric, utcnow
from chainrule.queue import enqueue
from chainrule.settings import Settings
from engine import Model, checkpoint as ckpt_io, losses, optim
from engine.train import FitResult, TrainingError, fit

from . import devices
from .callbacks import SHUTDOWN, Heartbeat, JobCallbacks, fenced, json_safe

log = logging.getLogger("chainrule.worker")

DTYPES = {"float32": torch.float32, "float64": torch.float64}
WEIGHTS_FORMAT = "chainrule.weights"


class JobFailed(Exception):
    """A reason to fail the job that the user can act on; `code` goes to error_code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Claim:
    job_id: str
    attempt: int
    device: torch.device
    heartbeat: Heartbeat | None = field(default=None, repr=False)

    def stop_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()


def claim(settings: Settings, job_id: str, worker_device: torch.device) -> Claim | None:
    """Take the job if it is queued and not cancelled: one conditional UPDATE, so of several
    workers holding a message for it (duplicates, resends) exactly one wins."""
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        if job is None:
            log.warning("job %s: no such job (deleted, or a message for another database); skipping", job_id)
            return None
        if job.status != "queued":
            log.info("job %s is %s; this message is a duplicate or stale, skipping", job_id, job.status)
            return None
        if job.cancel_requested:
            s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                      .values(status="cancelled", finished_at=utcnow()))
            log.info("job %s was cancelled while queued", job_id)
            return None
        device = devices.for_job(job.device, worker_device)
        if device is None:
            # only a misrouted message gets here (gpu queue consumed by a cpu worker): leave the job
            # queued for a GPU worker; the janitor sends it again
            log.error("job %s asks for cuda but this worker trains on %s; leaving it queued. Do not "
                      "let CPU workers consume the gpu queue.", job_id, worker_device)
            return None
        now = utcnow()
        attempt = s.execute(
            update(Job).where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))
            .values(status="running", attempts=Job.attempts + 1,
                    started_at=job.started_at or now, heartbeat_at=now,
                    worker_host=socket.gethostname()[:200], worker_device=devices.describe(device))
            .returning(Job.attempts)).scalar()
    if attempt is None:
        log.info("job %s was claimed by another worker first", job_id)
        return None
    log.info("job %s: claimed, attempt %d, on %s", job_id, attempt, devices.describe(device))
    return Claim(job_id, attempt, device)


def run_job(settings: Settings, job_id: str, worker_device: torch.device) -> str:
    """Claim and train `job_id`; returns the status it ends in here ('skipped' if not claimed)."""
    c = claim(settings, job_id, worker_device)
    if c is None:
        return "skipped"
    c.heartbeat = heartbeat = Heartbeat(settings, job_id, c.attempt)
    heartbeat.start()
    try:
        return _train(settings, c, heartbeat)
    except (TrainingError, JobFailed) as exc:
        log.info("job %s failed: %s", job_id, exc)
        return _finish(settings, c, status="failed", error_code=exc.code, error_message=str(exc))
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        log.warning("job %s: out of memory on %s: %s", job_id, c.device, exc)
        return _finish(settings, c, status="failed", error_code="out_of_memory",
                       error_message=f"the worker ran out of memory on {devices.describe(c.device)} "
                                     f"({type(exc).__name__}); try a smaller batch_size or model")
    except Exception as exc:
        log.exception("job %s: internal error", job_id)
        return _finish(settings, c, status="failed", error_code="internal_error",
                       error_message=f"the worker hit an internal error: {type(exc).__name__}: {exc}"[:4000])
    finally:
        heartbeat.stop()


def _load_dataset(settings: Settings, job: Job) -> tuple[Dataset, torch.Tensor, torch.Tensor]:
    with session_scope(settings.database_url) as s:
        dataset = s.get(Dataset, job.dataset_id) if job.dataset_id else None
    if dataset is None:
        raise JobFailed("dataset_missing", f"the dataset {job.request.get('dataset_id')} was deleted before "
                                           "the job ran; upload it again and submit a new job")
    path = artifacts.resolve(settings, dataset.path)
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise JobFailed("dataset_missing", f"the tensor file of dataset {dataset.id} is missing from the "
                                           f"artifact store ({dataset.path}); upload it again") from None
    if "X" not in tensors or "y" not in tensors:
        raise JobFailed("dataset_invalid", f"dataset file {dataset.path} holds {sorted(tensors)}, "
                                           "expected tensors 'X' and 'y'")
    return dataset, tensors["X"], tensors["y"]


def _load_resume(settings: Settings, job_id: str, device: torch.device) -> ckpt_io.Checkpoint | None:
    path = artifacts.resolve(settings, artifacts.checkpoint_relpath(job_id))
    if not path.exists():
        return None
    try:
        ckpt = ckpt_io.load(path, device=device)
    except Exception as exc:  # written atomically, so this is damage from outside: start over
        log.warning("job %s: checkpoint %s unreadable (%s: %s); starting from epoch 0",
                    job_id, path, type(exc).__name__, exc)
        return None
    if ckpt.meta.get("job_id") not in (None, job_id):
        log.warning("job %s: checkpoint belongs to job %s; starting from epoch 0", job_id, ckpt.meta["job_id"])
        return None
    return ckpt


def _train(settings: Settings, c: Claim, heartbeat: Heartbeat) -> str:
    with session_scope(settings.database_url) as s:
        job = s.get(Job, c.job_id)
    try:
        request = JobRequest.model_validate(job.request)
    except ValueError as exc:
        raise JobFailed("invalid_job", f"the stored job request no longer validates: {exc}") from None
    dataset, X, y = _load_dataset(settings, job)
    input_shape = tuple(int(d) for d in dataset.input_shape)
    dtype = DTYPES[request.dtype]
    try:
        model = Model.from_spec(request.model, input_shape, seed=request.seed, dtype=dtype, device=c.device)
        loss = losses.make(request.loss)
        optimizer = optim.make(request.optimizer, model.parameters())
    except (ValueError, KeyError) as exc:
        raise JobFailed("invalid_job", f"cannot build the network: {exc}") from None

    resume = _load_resume(settings, c.job_id, c.device)
    resumed_from = resume.epoch if resume is not None else None
    with session_scope(settings.database_url) as s:
        # epochs after the checkpoint are trained again: drop the rows a lost attempt wrote for them
        s.execute(delete(JobMetric).where(JobMetric.job_id == c.job_id, JobMetric.epoch > (resumed_from or 0)))
    if resume is not None:
        log.info("job %s: resuming from the checkpoint of epoch %d (step %d)", c.job_id, resume.epoch, resume.step)

    callbacks = JobCallbacks(settings, c.job_id, c.attempt, heartbeat)
    try:
        result = fit(model, loss, optimizer, X, y, request.train_config(), task=dataset.task,
                     callbacks=callbacks, resume=resume, checkpoint_every=1)
    except ValueError as exc:  # fit checks data and config before the first step, in the user's terms
        raise JobFailed("invalid_job", str(exc)) from None

    if heartbeat.lost:
        log.warning("job %s: the row was taken from this attempt while it ran; result discarded", c.job_id)
        return "lost"
    if result.status == "cancelled":
        if heartbeat.cancel_requested:
            return _finish(settings, c, status="cancelled", summary=_summary(result, resumed_from, job))
        return _release(settings, c, job)   # stopped by a worker shutdown, not by the user

    relpath = artifacts.weights_relpath(c.job_id)
    artifacts.write_atomic(artifacts.resolve(settings, relpath), weights_bytes(model, request, input_shape, dataset))
    return _finish(settings, c, status="succeeded", summary=_summary(result, resumed_from, job), weights_path=relpath,
                   progress={"epoch": result.epochs_completed, "step": result.steps})


def weights_bytes(model: Model, request: JobRequest, input_shape: tuple[int, ...], dataset: Dataset) -> bytes:
    """The trained state_dict as .safetensors, torch.nn names, CPU and contiguous, with the spec
    in the metadata so the file alone says what network it belongs to."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": "pt",
        WEIGHTS_FORMAT: "1",
        "model_spec": json.dumps(request.model.model_dump(mode="json")),
        "input_shape": json.dumps(list(input_shape)),
        "output_shape": json.dumps(list(model.output_shape)),
        "dtype": request.dtype,
        "task": dataset.task,
        "classes": json.dumps(dataset.classes),
    }
    return save_safetensors(tensors, metadata=metadata)


def _summary(result: FitResult, resumed_from: int | None, job: Job) -> dict[str, Any]:
    summary = {"status": result.status, "epochs_completed": result.epochs_completed, "steps": result.steps,
               "best_epoch": result.best_epoch, "best_value": result.best_value,
               "total_time_s": round(result.total_time_s, 3), "resumed_from_epoch": resumed_from}
    if job.result and job.result.get("retries"):
        summary["retries"] = job.result["retries"]
    return json_safe(summary)


def _finish(settings: Settings, c: Claim, *, status: str, summary: dict | None = None,
            weights_path: str | None = None, error_code: str | None = None,
            error_message: str | None = None, progress: dict[str, int] | None = None) -> str:
    c.stop_heartbeat()   # its next UPDATE would find the row final and call the job lost
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "heartbeat_at": utcnow()}
    if status == "succeeded":
        values.update(fraction=1.0, weights_path=weights_path, error_code=None, error_message=None)
    if summary is not None:
        values["result"] = summary
    if progress is not None:
        values.update(progress)
    if error_code is not None:
        values.update(error_code=error_code, error_message=error_message)
    with session_scope(settings.database_url) as s:
        won = s.execute(update(Job).where(*fenced(c.job_id, c.attempt)).values(**values)).rowcount
    if not won:
        log.warning("job %s: not running as attempt %d any more; outcome %r discarded", c.job_id, c.attempt, status)
        return "lost"
    log.info("job %s: %s", c.job_id, status if error_code is None else f"{status} ({error_code}): {error_message}")
    return status


def _release(settings: Settings, c: Claim, job: Job) -> str:
    """Worker shutdown mid-job: back to 'queued' without spending an attempt, sent again at once,
    to resume from the last epoch's checkpoint on whichever worker takes it."""
    c.stop_heartbeat()
    with session_scope(settings.database_url) as s:
        won = s.execute(update(Job).where(*fenced(c.job_id, c.attempt), Job.cancel_requested.is_(False))
                        .values(status="queued", attempts=Job.attempts - 1, sent_at=None)).rowcount
        if not won:
            cancelled = s.execute(update(Job).where(*fenced(c.job_id, c.attempt))
                                  .values(status="cancelled", finished_at=utcnow())).rowcount
            return "cancelled" if cancelled else "lost"
    log.info("job %s: worker shutting down; job back in queue %s", c.job_id, job.queue)
    try:
        enqueue(settings, c.job_id, job.queue)
    except Exception as exc:  # sent_at stays NULL: the janitor sends it
        log.warning("job %s: could not send it again (%s); the janitor will", c.job_id, exc)
        return "queued"
    with session_scope(settings.database_url) as s:
        s.execute(update(Job).where(Job.id == c.job_id, Job.status == "queued", Job.sent_at.is_(None))
                  .values(sent_at=utcnow()))
    return "queued"
