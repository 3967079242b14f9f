"""One attempt at a job's loss landscape (the task chainrule.landscape): claim, load, compute, store.

The final weights are the job's weights file. The initial weights are not stored: build_model makes
them again from the job's seed, as the first attempt did (engine.init draws every value in float64
on the CPU from a generator seeded with it, whatever the device), and their sha256 is checked
against the fingerprint the job's init report took when training started. A mismatch (another
torch, whose generator draws differently) leaves the line out rather than draw it from the wrong
start. The loss is evaluated in float64 on a seeded subset of the job's training rows (its own
split), with the loss it was trained with.

Heartbeat, progress and cancel are read between evaluations (engine.landscape's tick), at most every
heartbeat interval: no thread.
"""
from __future__ import annotations

import logging
import time

import torch
from safetensors.torch import load_file

from core import artifacts, landscapes
from core.db import session_scope
from core.hessian_report import hessian_report, products_bound
from core.jobspec import JobRequest, build_model, served_spec
from core.jsonsafe import json_safe
from core.lifecycle import JobStatus
from core.settings import Settings
from core.tables import Dataset, Job, Landscape
from engine import Model, losses
from engine.data import split_indices
from engine.diagnostics import weights_digest
from engine.landscape import evaluations, landscape

from . import devices
from .runner import JobFailed, is_out_of_memory

log = logging.getLogger("chainrule.worker")
# the Hessian's options and their defaults (a landscape requested before the density had none)
HESSIAN_DEFAULTS = {"iterations": 200, "trace_samples": 20, "tolerance": 1e-3, "density_vectors": 3,
                    "density_steps": 40, "seed": 0}


class Stopped(Exception):
    """Cancelled by its user (`cancelled`), or no longer this attempt's (`lost`)."""

    def __init__(self, outcome: str):
        super().__init__(outcome)
        self.outcome = outcome


class Progress:
    """engine.landscape's tick: counts evaluations; beats (progress, cancel, fence) every interval."""

    def __init__(self, settings: Settings, job_id: str, attempt: int, total: int):
        self.settings, self.job_id, self.attempt, self.total = settings, job_id, attempt, max(total, 1)
        self.done, self.beaten_at = 0, time.monotonic()

    def __call__(self) -> None:
        self.done += 1
        if time.monotonic() - self.beaten_at < min(self.settings.heartbeat_interval_s,
                                                   self.settings.cancel_poll_interval_s):
            return
        self.beaten_at = time.monotonic()
        cancel = landscapes.beat(self.settings, self.job_id, self.attempt, self.done / self.total)
        if cancel is None:
            raise Stopped("lost")
        if cancel:
            raise Stopped("cancelled")


def _targets(loss: str, y: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """y as the loss takes it: class ids (cross_entropy), (N, 1) floats (bce), (N, k) floats."""
    if loss == "cross_entropy":
        return y.to(device, torch.int64)
    y = y.to(device, dtype)
    return y.reshape(-1, 1) if y.dim() == 1 else y


def _rows(settings: Settings, job: Job, request: JobRequest, samples: int, seed: int, device: torch.device):
    """A seeded subset of the job's training rows (the split fit made), in float64 on `device`."""
    with session_scope(settings.database_url) as s:
        dataset = s.get(Dataset, job.dataset_id) if job.dataset_id else None
    if dataset is None:
        raise JobFailed("dataset_missing", "the job's dataset was deleted; its landscape needs its training rows")
    try:
        tensors = load_file(str(artifacts.resolve(settings, dataset.path)))
    except FileNotFoundError:
        raise JobFailed("dataset_missing", f"the tensor file of dataset {dataset.id} is missing") from None
    train, _ = split_indices(tensors["X"].shape[0], request.validation_split, request.seed)
    pick = train[torch.randperm(train.numel(), generator=torch.Generator().manual_seed(seed))[:samples]]
    X = tensors["X"].index_select(0, pick).to(device, torch.float64)
    return X, _targets(request.loss.type, tensors["y"].index_select(0, pick), torch.float64, device)


def initial_state(request: JobRequest, input_shape, job: Job, final: Model) -> tuple[dict | None, str]:
    """The initial weights rebuilt from the seed, and whether they match the job's fingerprint. Its
    standardize layers hold the final network's statistics: the run had them from its first step."""
    initial = build_model(request, input_shape, "cpu")
    expected = (job.init_report or {}).get("initial_weights_sha256")
    if expected is not None and weights_digest(initial) != expected:
        return None, "mismatch"
    state = initial.state_dict()
    state.update({f"{key}.{name}": b.cpu() for key, layer in final.layer_items() if layer.kind == "standardize"
                  for name, b in layer.buffers.items()})
    return state, "unverified" if expected is None else "verified"


def compute(settings: Settings, job_id: str, attempt: int, device: torch.device) -> dict:
    with session_scope(settings.database_url) as s:
        job, options = s.get(Job, job_id), s.get(Landscape, job_id).options
    request = JobRequest.model_validate(job.request)
    shape = tuple(int(d) for d in job.input_shape)
    weights = artifacts.resolve(settings, job.weights_path or artifacts.weights_relpath(job_id))
    if not weights.is_file():
        raise JobFailed("weights_missing", f"the weights file of job {job_id} is missing from the store")
    final = Model.from_spec(served_spec(request), shape, dtype=torch.float64, device=device)
    final.load_state_dict(load_file(str(weights)), strict=True)
    X, y = _rows(settings, job, request, options["samples"], options["seed"], device)
    initial, verified = initial_state(request, shape, job, final)
    hessian_options = {name: options.get(name, default) for name, default in HESSIAN_DEFAULTS.items()}
    tick = Progress(settings, job_id, attempt, evaluations(options["points"], options["grid"], products_bound(
        final.n_parameters, **{k: v for k, v in hessian_options.items() if k not in ("tolerance", "seed")})))
    result = landscape(final, initial, losses.make(request.loss, check_labels=False), X, y,
                       points=options["points"], grid=options["grid"], span=options["span"], seed=options["seed"],
                       curvature=lambda gradient, theta: hessian_report(gradient, theta, **hessian_options), tick=tick)
    return json_safe({**result, "initial_weights": verified})


def run_landscape(settings: Settings, job_id: str, worker_device: torch.device) -> str:
    """Claim and compute `job_id`'s landscape; the status it ends in ('skipped' if not claimed)."""
    attempt = landscapes.claim(settings, job_id)
    if attempt is None:
        return "skipped"
    with session_scope(settings.database_url) as s:
        requested = s.get(Job, job_id).device
    device = devices.for_job(requested, worker_device) or worker_device

    def end(status: JobStatus, **values) -> str:
        return str(status) if landscapes.finish(settings, job_id, attempt, status, **values) else "lost"
    try:
        result = compute(settings, job_id, attempt, device)
    except Stopped as stop:
        return end(JobStatus.CANCELLED) if stop.outcome == "cancelled" else "lost"
    except JobFailed as exc:
        return end(JobStatus.FAILED, error_code=exc.code, error_message=str(exc))
    except Exception as exc:
        code = "out_of_memory" if is_out_of_memory(exc) else "internal_error"
        log.exception("job %s: landscape failed", job_id)
        return end(JobStatus.FAILED, error_code=code, error_message=f"{type(exc).__name__}: {exc}"[:4000])
    return end(JobStatus.SUCCEEDED, result=result, fraction=1.0)
