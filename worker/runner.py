"""One attempt at one job: claim, load, build, resume, fit, store the outcome.

The task (worker.app) calls `run_job(settings, job_id, device)`; everything here re-reads the
database, so a duplicate or stale message is harmless, and never leaves a job 'running'
behind it: every way out of `_train` ends in a core.lifecycle transition to a final status
(or back to 'queued' when the worker is shutting down).
"""
from __future__ import annotations

import logging

import torch
from safetensors.torch import load_file
from sqlalchemy import delete

from core import artifacts, disk, findings as stored_findings, lifecycle
from core.db import is_unavailable, retry_unavailable, session_scope
from core.jobspec import JobRequest, build_model
from core.lifecycle import Claim, JobStatus
from core.preprocessing import Scaling
from core.settings import Settings
from core.sweeps.study import PRUNED
from core.tables import Dataset, Job, JobMetric
from engine import checkpoint as ckpt_io, losses, optim
from engine.train import FitResult, TrainingError, fit
from engine.text import LANGUAGE_MODEL

from . import devices, ranks, trial
from .callbacks import Heartbeat, json_safe
from .outcome import weights_bytes

log = logging.getLogger("chainrule.worker")


class JobFailed(Exception):
    """A reason to fail the job that the user can act on; `code` goes to error_code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def claim(settings: Settings, job_id: str, worker_device: torch.device) -> Claim | None:
    """lifecycle.claim for a worker that trains on `worker_device`."""
    def label(requested: str) -> str | None:
        device = devices.for_job(requested, worker_device)
        return None if device is None else devices.describe(device)
    return lifecycle.claim(settings, job_id, label)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError
    ("DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes")."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc) or "out of memory" in str(exc))


def run_job(settings: Settings, job_id: str, worker_device: torch.device) -> str:
    """Claim and train `job_id`; returns the status it ends in here ('skipped' if not claimed,
    'lost' if the job was taken from this attempt while it ran, 'queued' if handed back).

    The claim waits for an unreachable database (up to database_patience_s) while this worker holds
    the message: a worker that cannot reach the database must not take message after message that
    it cannot act on. After that the error ends the task; the job is still queued, and the reconciler
    sends it again within max_resend_interval_s."""
    claimed = retry_unavailable(lambda: claim(settings, job_id, worker_device), f"job {job_id}: claim",
                                settings.database_patience_s)
    if claimed is None:
        return "skipped"
    device = devices.for_job(claimed.requested_device, worker_device)
    heartbeat = Heartbeat(settings, claimed)
    heartbeat.start()
    try:
        return _train(settings, claimed, device, heartbeat)
    except (TrainingError, JobFailed) as exc:
        log.info("job %s failed: %s", job_id, exc)
        return _fail(settings, claimed, heartbeat, exc.code, str(exc))
    except Exception as exc:
        if disk.is_disk_full(exc):   # a checkpoint, the weights or a row found no space: said, not retried
            log.error("job %s: disk full: %s: %s", job_id, type(exc).__name__, exc)
            return _fail(settings, claimed, heartbeat, disk.CODE, f"{disk.full_message(settings)}; the job's "
                         f"checkpoint or weights could not be written ({type(exc).__name__})")
        if is_unavailable(exc):   # not the job's fault: back to the queue, no attempt spent
            log.warning("job %s: database unavailable mid-job (%s); handing the job back", job_id, exc)
            heartbeat.stop()
            released = retry_unavailable(lambda: lifecycle.release(settings, claimed), f"job {job_id}: release",
                                         settings.database_patience_s)
            return "lost" if released is None else str(released)
        if is_out_of_memory(exc):  # final: the same job on the same worker would run out again
            log.warning("job %s: out of memory on %s: %s", job_id, device, exc)
            return _fail(settings, claimed, heartbeat, "out_of_memory",
                         f"the worker ran out of memory on {devices.describe(device)} ({type(exc).__name__}: "
                         f"{str(exc)[:300]}); try a smaller batch_size or model")
        log.exception("job %s: internal error", job_id)
        return _fail(settings, claimed, heartbeat, "internal_error",
                     f"the worker hit an internal error: {type(exc).__name__}: {exc}"[:4000])
    finally:
        heartbeat.stop()


def _ended(settings: Settings, claimed: Claim, heartbeat: Heartbeat, status: JobStatus, **values) -> str:
    heartbeat.stop()   # its next UPDATE would find the row final and call the job lost
    finished = retry_unavailable(lambda: lifecycle.finish(settings, claimed, status, **values),
                                 f"job {claimed.job_id}: finish", settings.database_patience_s)
    if not finished:
        return "lost"
    code = values.get("error_code")
    log.info("job %s: %s", claimed.job_id, status if code is None else f"{status} ({code}): {values['error_message']}")
    return str(status)


def _fail(settings: Settings, claimed: Claim, heartbeat: Heartbeat, code: str, message: str) -> str:
    return _ended(settings, claimed, heartbeat, JobStatus.FAILED, error_code=code, error_message=message)


def _load_dataset(settings: Settings, job: Job) -> tuple[Dataset, torch.Tensor, torch.Tensor | None]:
    with session_scope(settings.database_url) as s:
        dataset = s.get(Dataset, job.dataset_id) if job.dataset_id else None
    if dataset is None:
        raise JobFailed("dataset_missing", f"the dataset {job.request.get('dataset_id')} was deleted before "
                                           "the job ran; upload it again and submit a new job")
    try:
        tensors = load_file(str(artifacts.resolve(settings, dataset.path)))
    except FileNotFoundError:
        raise JobFailed("dataset_missing", f"the tensor file of dataset {dataset.id} is missing from the "
                                           f"artifact store ({dataset.path}); upload it again") from None
    if dataset.task == LANGUAGE_MODEL:        # a token stream; fit draws its windows and their targets
        if "ids" not in tensors:
            raise JobFailed("dataset_invalid", f"dataset file {dataset.path} holds {sorted(tensors)}, "
                                               "expected the token stream 'ids'")
        return dataset, tensors["ids"].long(), None
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


def _forget_epochs_after(settings: Settings, job_id: str, epoch: int | None) -> None:
    """Epochs after the resume point (None: a fresh start, which takes a new init report too) are
    trained again: drop the metrics and findings a lost attempt wrote for them."""
    with session_scope(settings.database_url) as s:
        s.execute(delete(JobMetric).where(JobMetric.job_id == job_id, JobMetric.epoch > (epoch or 0)))
        stored_findings.forget(s, job_id, epoch)


def _train(settings: Settings, claimed: Claim, device: torch.device, heartbeat: Heartbeat) -> str:
    with session_scope(settings.database_url) as s:
        job = s.get(Job, claimed.job_id)
    try:
        request = JobRequest.model_validate(job.request)
    except ValueError as exc:
        raise JobFailed("invalid_job", f"the stored job request no longer validates: {exc}") from None
    if request.distributed.processes > 1:     # this worker supervises the job's rank processes
        return ranks.run(settings, claimed, device, heartbeat, request.distributed.processes, _ended, _fail)
    dataset, X, y = _load_dataset(settings, job)
    try:
        scaling = Scaling.of(request.preprocessing, X, y, request.validation_split, request.seed) \
            if request.preprocessing.standardize != "none" else None
        shape = request.input_shape(dataset.input_shape)
        model = build_model(request, shape, device, compile=settings.engine_compile, scaling=scaling, served=False)
        loss = losses.make(request.loss)
        optimizer = optim.make(request.optimizer, model.parameters())
    except (ValueError, KeyError) as exc:
        raise JobFailed("invalid_job", f"cannot build the network: {exc}") from None
    resume = _load_resume(settings, claimed.job_id, device)
    resumed_from = resume.epoch if resume is not None else None
    _forget_epochs_after(settings, claimed.job_id, resumed_from)
    if resume is not None:
        log.info("job %s: resuming from the checkpoint of epoch %d (step %d)", claimed.job_id, resume.epoch,
                 resume.step)
    callbacks = trial.callbacks_for(settings, claimed, heartbeat, job.sweep_id, request.epochs)
    try:
        result = fit(model, loss, optimizer, X, y if scaling is None else scaling.scale_targets(y),
                     request.train_config(), task=dataset.task,
                     callbacks=callbacks, resume=resume, checkpoint_every=1)
    except ValueError as exc:  # fit checks data and config before the first step, in the user's terms
        raise JobFailed("invalid_job", str(exc)) from None

    if heartbeat.lost:
        log.warning("job %s: the row was taken from this attempt while it ran; result discarded", claimed.job_id)
        return "lost"
    summary = _summary(result, resumed_from, job)
    if result.status == "cancelled":
        pruned = getattr(callbacks, "pruned", None)
        if pruned is not None:                # stopped by the sweep's pruner at an epoch boundary
            return _ended(settings, claimed, heartbeat, JobStatus.CANCELLED, result=summary, error_code=PRUNED,
                          error_message=pruned)
        if heartbeat.cancel_requested:
            return _ended(settings, claimed, heartbeat, JobStatus.CANCELLED, result=summary)
        heartbeat.stop()                      # stopped by a worker shutdown, not by the user
        released = lifecycle.release(settings, claimed)
        return "lost" if released is None else str(released)
    relpath = artifacts.weights_relpath(claimed.job_id)
    served = model
    if scaling is not None and scaling.targets is not None:    # the trained network, then the targets' unscaling
        served = build_model(request, shape, device, scaling=scaling)
        served.load_state_dict(model.state_dict(), strict=False)
    weights = weights_bytes(served, request, served.input_shape, dataset.task, dataset.classes, dataset.tokenizer)
    artifacts.write_atomic(artifacts.resolve(settings, relpath), weights)
    return _ended(settings, claimed, heartbeat, JobStatus.SUCCEEDED, result=summary, weights_path=relpath,
                  artifact_bytes=len(weights),
                  fraction=1.0, epoch=result.epochs_completed, step=result.steps,
                  error_code=None, error_message=None)


def _summary(result: FitResult, resumed_from: int | None, job: Job) -> dict:
    summary = {"status": result.status, "epochs_completed": result.epochs_completed, "steps": result.steps,
               "best_epoch": result.best_epoch, "best_value": result.best_value,
               "total_time_s": round(result.total_time_s, 3), "resumed_from_epoch": resumed_from}
    if job.result and job.result.get("retries"):
        summary["retries"] = job.result["retries"]
    return json_safe(summary)
