"""The Celery app configuration shared by the API (which sends by task name) and the worker.

Embedded mode uses kombu's filesystem transport under CHAINRULE_DATA_DIR/broker (with an atomic
put, core.fs_transport): no server, and two instances with different data dirs never meet.
Production uses Redis.
A message only wakes a worker up: the job is its row, and a job whose worker died is recovered
by the reconciler, not by broker redelivery (core.lifecycle's docstring has the plan).
"""
from __future__ import annotations

from celery import Celery
from kombu import Queue

from .settings import Settings

TRAIN_TASK = "chainrule.train"
LANDSCAPE_TASK = "chainrule.landscape"   # a job's loss landscape (core.landscapes), on the job's queue
WEBHOOK_TASK = "chainrule.webhook"       # one attempt at a webhook delivery (core.webhooks), on `auto`
RANK_TASK = "chainrule.rank"             # one rank of a job whose ranks span hosts (worker.remote_rank)
RANKS_QUEUE = "ranks"                    # its queue (no job's): `chainrule worker` consumes it by default
QUEUES = ("cpu", "gpu", "auto")  # `auto` is consumed by every worker: whichever is free takes it


def queue_for(device: str) -> str:
    """Broker queue for a job's requested device: cuda -> gpu, cpu -> cpu, auto -> auto."""
    return {"cuda": "gpu", "cpu": "cpu", "auto": "auto"}[device]


def _broker_options(settings: Settings) -> dict:
    if not settings.embedded_broker:
        # fail fast when Redis is down: the job row is committed and the reconciler resends it
        return {"visibility_timeout": 12 * 3600, "socket_connect_timeout": 2, "socket_timeout": 10,
                "max_retries": 0}
    root = settings.broker_dir
    for sub in ("queue", "processed", "control"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "processed_folder": str(root / "processed"),
        "control_folder": str(root / "control"),
        "store_processed": False,
        "polling_interval": settings.broker_poll_interval_s,
    }


def celery_app(settings: Settings) -> Celery:
    """One app per broker (and per embedded store), built on first use."""
    key = (settings.broker_url, str(settings.broker_dir), settings.broker_poll_interval_s)
    if key not in _APPS:
        _APPS[key] = _make_app(settings)
    return _APPS[key]


_APPS: dict[tuple, Celery] = {}


def _make_app(settings: Settings) -> Celery:
    app = Celery("chainrule", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True, result_backend=None,
        task_acks_late=True, task_reject_on_worker_lost=False, worker_prefetch_multiplier=1,
        task_queues=[Queue(q, routing_key=q) for q in (*QUEUES, RANKS_QUEUE)], task_default_queue="auto",
        task_create_missing_queues=False,
        broker_transport_options=_broker_options(settings),
        broker_connection_retry_on_startup=True, broker_connection_timeout=2,
        worker_hijack_root_logger=False, worker_send_task_events=False,
        broker_pool_limit=10,
    )
    if settings.embedded_broker:   # kombu's filesystem transport, with a put a poller cannot read half-written
        app.conf.broker_transport = "core.fs_transport:Transport"
    return app


def send(settings: Settings, job_id: str, queue: str, task: str = TRAIN_TASK) -> None:
    """Put a wake-up message for a committed job (or its landscape) on `queue`; raises if the broker is
    unreachable. Call core.lifecycle.dispatch (core.landscapes.dispatch), which records the send."""
    celery_app(settings).send_task(task, args=[job_id], queue=queue, routing_key=queue, retry=False)


def send_rank(settings: Settings, order: dict) -> None:
    """Ask a worker on another host to run one rank of a launch (worker.remote_rank reads `order`)."""
    celery_app(settings).send_task(RANK_TASK, args=[order], queue=RANKS_QUEUE, routing_key=RANKS_QUEUE,
                                   retry=False)
