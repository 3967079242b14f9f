"""The Celery app and its tasks: `chainrule.train(job_id)`, `chainrule.landscape(job_id)` (a trained
job's loss landscape, worker/landscape.py), `chainrule.webhook(delivery_id)` (one attempt at a webhook
delivery, core.webhooks.delivery) and `chainrule.rank(order)` (one rank of a job another host's worker
supervises, worker/remote_rank.py).

Start it with `chainrule worker` (pool solo: one training job per process), or
`celery -A worker.app worker -P solo -Q cpu,auto`. The task is thin: it passes the id to
worker.runner, which re-reads the row and claims it atomically.

Per process, beside the consumer:
  - the reconciler thread (core.reconciler), started when the worker is ready; it also
    touches ALIVE_FILE every pass for the container healthcheck;
  - a shutdown flag: on SIGTERM / SIGINT Celery starts a warm shutdown and we make the
    running fit stop at its next step and hand its job back to the queue.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from celery import signals

from core import reconciler, workers
from core.broker import LANDSCAPE_TASK, RANK_TASK, TRAIN_TASK, WEBHOOK_TASK, celery_app
from core.sweeps import scheduler
from core.settings import get_settings
from core.webhooks import delivery

from . import devices, landscape, remote_rank, runner
from .callbacks import SHUTDOWN
from .options import ALIVE_FILE_ENV, QUEUES_ENV, THREADS_ENV, alive_file

log = logging.getLogger("chainrule.worker")

settings = get_settings()
app = celery_app(settings)
if os.environ.get(THREADS_ENV):
    # several workers on one machine: each its share of the cores. Small batches on oversubscribed
    # cores are many times slower with more threads than cores (OpenMP barriers spin on busy CPUs)
    torch.set_num_threads(max(1, int(os.environ[THREADS_ENV])))
_device = None
_reconciler = None


def worker_device():
    """The device this process trains on, resolved once (CHAINRULE_WORKER_DEVICE, default auto)."""
    global _device
    if _device is None:
        _device = devices.resolve()
    return _device


def _for_job(task: str, job_id, run) -> str:
    """A task's body: the job id checked, then run(settings, job_id, device), which re-reads the rows."""
    if not isinstance(job_id, str):
        log.error("%s expects a job id string, got %r; dropping the message", task, job_id)
        return "invalid"
    return run(settings, job_id, worker_device())


@app.task(name=TRAIN_TASK, acks_late=True, ignore_result=True)
def train(job_id: str) -> str:
    status = _for_job(TRAIN_TASK, job_id, runner.run_job)
    try:   # a sweep's trial that ended frees a slot: its sweep makes the next one now, not at the next pass
        scheduler.trial_ended(settings, job_id)
    except Exception:
        log.exception("job %s: could not advance its sweep; the reconciler will", job_id)
    return status


@app.task(name=LANDSCAPE_TASK, acks_late=True, ignore_result=True)
def compute_landscape(job_id: str) -> str:
    return _for_job(LANDSCAPE_TASK, job_id, landscape.run_landscape)


@app.task(name=WEBHOOK_TASK, acks_late=True, ignore_result=True)
def deliver_webhook(delivery_id: str) -> str:
    if not isinstance(delivery_id, str):
        log.error("%s expects a delivery id string, got %r; dropping the message", WEBHOOK_TASK, delivery_id)
        return "invalid"
    return delivery.deliver(settings, delivery_id)


@app.task(name=RANK_TASK, acks_late=True, ignore_result=True)
def run_rank(order: dict) -> str:
    if not remote_rank.valid_order(order):
        log.error("%s expects an order with %s, got %r; dropping the message", RANK_TASK,
                  ", ".join(remote_rank.ORDER_KEYS), order)
        return "invalid"
    return remote_rank.task(settings, order, worker_device())


def _beat() -> None:
    """Every sweep: this worker's row in the registry (core.workers), then the liveness file."""
    queues = [q for q in os.environ.get(QUEUES_ENV, "cpu,auto").split(",") if q]
    workers.beat(settings, queues, worker_device().type)
    path = Path(os.environ.get(ALIVE_FILE_ENV) or alive_file(settings.data_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


@signals.worker_ready.connect
def _start_reconciler(**_) -> None:
    global _reconciler
    log.info("worker ready: training on %s, sweeping every %.1f s",
             devices.describe(worker_device()), settings.reconcile_interval_s)
    if _reconciler is None:
        _reconciler = reconciler.start_thread(settings, on_tick=_beat)


@signals.worker_shutting_down.connect
def _on_shutting_down(sig=None, how=None, **_) -> None:
    # called inside the signal handler: only set a flag; the fit loop reads it before each step
    SHUTDOWN.set()


@signals.worker_shutdown.connect
def _stop_reconciler(**_) -> None:
    if _reconciler is not None:
        _reconciler[1].set()
        try:
            workers.forget(settings)
        except Exception as exc:  # noqa: BLE001 - the row then ages out of the registry
            log.warning("could not remove this worker from the registry: %s", exc)
