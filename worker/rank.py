"""One rank process of a multi-process job: `python -m worker.rank`, spawned by worker.ranks (never forked).

It joins the job's process group at the supervisor's TCPStore, builds the job's model and data as the
single-process runner does, resumes from the job's checkpoint when there is one, and runs fit with
engine DataParallel. Only rank 0 writes: metrics, findings, checkpoints (its callbacks are the job's, with
a heartbeat of their own for progress and cancel), the weights, and the outcome file the supervisor
reads. SIGTERM (the supervisor's: worker shutdown) stops every rank at its next step.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from core import artifacts
from core.jobspec import JobRequest, build_model
from core.lifecycle import Claim
from core.preprocessing import Scaling
from core.settings import get_settings
from core.tables import Job
from core.db import session_scope
from engine import losses, optim
from engine.train import Callbacks, TrainingError, fit
from engine.train.distributed import DataParallel

from . import runner, trial
from .callbacks import SHUTDOWN, Heartbeat
from .outcome import weights_bytes

log = logging.getLogger("chainrule.worker.rank")

ENV = "CHAINRULE_RANK_"          # CHAINRULE_RANK_{RANK,WORLD,STORE_HOST,STORE_PORT,JOB,...}: set by worker.ranks


class _Follower(Callbacks):
    """A rank other than 0: writes nothing; stops when the worker shuts down (fit spreads any rank's stop)."""

    def should_stop(self) -> bool:
        return SHUTDOWN.is_set()


def _orphan_watch(supervisor: int) -> None:
    """Exit at once when the supervising worker is gone (this process re-parented): its heartbeat stopped,
    so the job will be run again from its checkpoint, and nothing may write for this attempt any more."""
    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(0.5)
        os._exit(3)
    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _env(name: str) -> str:
    return os.environ[ENV + name]


def _join(rank: int, world: int, device: torch.device, timeout_s: float) -> None:
    store = dist.TCPStore(_env("STORE_HOST"), int(_env("STORE_PORT")), world_size=None, is_master=False,
                          timeout=timedelta(seconds=timeout_s))
    prefix = dist.PrefixStore(_env("LAUNCH"), store)      # each launch of the job rendezvous afresh
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=prefix, rank=rank,
                            world_size=world, timeout=timedelta(seconds=timeout_s))


def train_rank(settings, claimed: Claim, rank: int, device: torch.device) -> dict:
    """Train this rank's part of the job; rank 0's outcome for the supervisor (worker.ranks)."""
    with session_scope(settings.database_url) as s:
        job = s.get(Job, claimed.job_id)
    request = JobRequest.model_validate(job.request)
    dataset, X, y = runner._load_dataset(settings, job)
    scaling = Scaling.of(request.preprocessing, X, y, request.validation_split, request.seed) \
        if request.preprocessing.standardize != "none" else None
    shape = request.input_shape(dataset.input_shape)
    model = build_model(request, shape, device, compile=settings.engine_compile, scaling=scaling, served=False)
    loss, optimizer = losses.make(request.loss), optim.make(request.optimizer, model.parameters())
    resume = runner._load_resume(settings, claimed.job_id, device)
    resumed_from = resume.epoch if resume is not None else None
    heartbeat = None
    if rank == 0:
        runner._forget_epochs_after(settings, claimed.job_id, resumed_from)
        heartbeat = Heartbeat(settings, claimed)
        heartbeat.start()
        callbacks = trial.callbacks_for(settings, claimed, heartbeat, job.sweep_id, request.epochs)
    else:
        callbacks = _Follower()
    parallel = DataParallel(bucket_bytes=settings.distributed_bucket_bytes,
                            sync_batchnorm=request.distributed.sync_batchnorm)
    try:
        result = fit(model, loss, optimizer, X, y if scaling is None else scaling.scale_targets(y),
                     request.train_config(), task=dataset.task, callbacks=callbacks, resume=resume,
                     checkpoint_every=1, parallel=parallel)
    finally:
        if heartbeat is not None:
            heartbeat.stop()
    if rank != 0:
        return {}
    outcome = {"status": result.status, "summary": runner._summary(result, resumed_from, job),
               "cancel_requested": heartbeat.cancel_requested, "lost": heartbeat.lost,
               "pruned": getattr(callbacks, "pruned", None)}
    if result.status in ("completed", "early_stopped") and not heartbeat.lost:
        served = model
        if scaling is not None and scaling.targets is not None:
            served = build_model(request, shape, device, scaling=scaling)
            served.load_state_dict(model.state_dict(), strict=False)
        weights = weights_bytes(served, request, served.input_shape, dataset.task, dataset.classes,
                                dataset.tokenizer)
        relpath = artifacts.weights_relpath(claimed.job_id)
        artifacts.write_atomic(artifacts.resolve(settings, relpath), weights)
        outcome.update(weights_path=relpath, artifact_bytes=len(weights), epochs=result.epochs_completed,
                       steps=result.steps)
    return outcome


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank %(process)d %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: SHUTDOWN.set())
    _orphan_watch(int(_env("SUPERVISOR")))
    rank, world = int(_env("RANK")), int(_env("WORLD"))
    torch.set_num_threads(max(1, int(_env("THREADS"))))
    settings = get_settings()
    device = torch.device(_env("DEVICE"))
    if device.type == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    claimed = Claim(_env("JOB"), int(_env("ATTEMPT")), _env("REQUESTED"), _env("QUEUE"))
    _join(rank, world, device, settings.distributed_init_timeout_s)
    try:
        outcome = train_rank(settings, claimed, rank, device)
    except (TrainingError, runner.JobFailed) as exc:   # the same on every rank: rank 0 reports it
        outcome = {"status": "failed", "code": exc.code, "message": str(exc)}
    except ValueError as exc:                           # fit's checks of data and config, before any step
        outcome = {"status": "failed", "code": "invalid_job", "message": str(exc)}
    if rank == 0:
        path = Path(_env("OUTCOME"))
        artifacts.write_atomic(path, json.dumps(outcome).encode())
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
