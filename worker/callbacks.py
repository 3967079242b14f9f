"""What a running job tells the database: heartbeat, progress, metrics, findings, the init report,
checkpoints; and what the database tells it: cancel.

Every write is fenced (core.lifecycle.fenced: id, status running, this attempt): a worker the
reconciler gave up on (its job requeued and claimed by another) can no longer touch the row,
and notices at its next heartbeat that the job is not its own any more.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import delete, update

from core import artifacts, findings as stored_findings, lifecycle
from core.db import session_scope
from core.jsonsafe import json_safe
from core.lifecycle import Claim, fenced
from core.settings import Settings
from core.tables import Job, JobMetric
from engine import checkpoint as ckpt_io
from engine.train import Callbacks, Progress

log = logging.getLogger("chainrule.worker")

# an epoch-end checkpoint is written at most this often (the first and the final one always):
# with millisecond epochs, an fsync'd file per epoch would cost several times the training
CHECKPOINT_MIN_INTERVAL_S = 1.0

# set from Celery's worker_shutting_down signal: the running fit stops at its next step and
# the job goes back to the queue, to resume from its last checkpoint on another worker
SHUTDOWN = threading.Event()


class Heartbeat(threading.Thread):
    """Every min(heartbeat_interval_s, cancel_poll_interval_s): one UPDATE ... RETURNING that
    refreshes heartbeat_at, writes the latest progress (at most every progress_interval_s)
    and reads cancel_requested. The training loop only reads two attributes."""

    def __init__(self, settings: Settings, claimed: Claim):
        super().__init__(name=f"heartbeat-{claimed.job_id[:8]}", daemon=True)
        self.settings, self.claimed = settings, claimed
        self.job_id, self.attempt = claimed.job_id, claimed.attempt
        self.interval = min(settings.heartbeat_interval_s, settings.cancel_poll_interval_s)
        self.progress: Progress | None = None     # set by the training thread, read here
        self.cancel_requested = False
        self.lost = False                         # the row is no longer ours (requeued or ended)
        self._written: Progress | None = None
        self._progress_at = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # database hiccup: keep beating; the reconciler allows heartbeat_timeout_s
                log.warning("job %s: heartbeat failed: %s: %s", self.job_id, type(exc).__name__, exc)
            if self.lost:
                return

    def beat(self) -> None:
        progress, now = self.progress, time.monotonic()
        values = None
        if progress is not None and progress is not self._written \
                and now - self._progress_at >= self.settings.progress_interval_s:
            values = {"epoch": progress.epoch, "step": progress.step, "total_steps": progress.total_steps,
                      "fraction": min(progress.fraction, 1.0)}
        cancel = lifecycle.beat(self.settings, self.claimed, values)
        if cancel is None:
            log.warning("job %s: no longer running as attempt %d here; stopping", self.job_id, self.attempt)
            self.lost = True
            return
        self.cancel_requested = cancel
        if values is not None:
            self._written, self._progress_at = progress, now

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=max(5.0, 2 * self.interval))


class JobCallbacks(Callbacks):
    """engine.train.fit callbacks for one attempt of one job."""

    def __init__(self, settings: Settings, claimed: Claim, heartbeat: Heartbeat):
        self.settings, self.heartbeat = settings, heartbeat
        self.job_id, self.attempt = claimed.job_id, claimed.attempt
        self.checkpoint_abspath = artifacts.resolve(settings, artifacts.checkpoint_relpath(self.job_id))
        self._checkpoint_saved_at: float | None = None

    @property
    def lost(self) -> bool:
        return self.heartbeat.lost

    def on_step(self, progress: Progress) -> None:
        self.heartbeat.progress = progress   # a reference swap; the heartbeat thread writes it

    def should_stop(self) -> bool:
        hb = self.heartbeat
        return hb.cancel_requested or hb.lost or SHUTDOWN.is_set()

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        m = json_safe(metrics)
        epoch = int(metrics["epoch"])
        with session_scope(self.settings.database_url) as s:
            won = s.execute(update(Job).where(*fenced(self.job_id, self.attempt))
                            .values(latest_metrics=m, epoch=epoch)).rowcount
            if not won:
                self.heartbeat.lost = True
                return
            # an epoch re-run after a resume replaces the row a lost attempt wrote for it
            s.execute(delete(JobMetric).where(JobMetric.job_id == self.job_id, JobMetric.epoch == epoch))
            s.add(JobMetric(job_id=self.job_id, epoch=epoch, train_loss=m.get("train_loss"),
                            val_loss=m.get("val_loss"), metrics=m))

    def on_init_report(self, report: dict[str, Any]) -> None:
        with session_scope(self.settings.database_url) as s:
            won = s.execute(update(Job).where(*fenced(self.job_id, self.attempt))
                            .values(init_report=json_safe(report))).rowcount
        if not won:
            self.heartbeat.lost = True

    def on_findings(self, findings: list[dict[str, Any]]) -> None:
        with session_scope(self.settings.database_url) as s:
            if not stored_findings.record(s, self.job_id, json_safe(findings), fenced(self.job_id, self.attempt)):
                self.heartbeat.lost = True

    def on_checkpoint(self, checkpoint: ckpt_io.Checkpoint) -> None:
        # fit only checkpoints a cancel at an epoch boundary, which resumes exactly: keep it, since
        # a worker shutdown re-queues the job and the throttled last checkpoint may be older
        if self.lost:
            return
        now = time.monotonic()
        if checkpoint.status == "running" and self._checkpoint_saved_at is not None \
                and now - self._checkpoint_saved_at < CHECKPOINT_MIN_INTERVAL_S:
            return
        # the fenced UPDATE first: a worker the reconciler gave up on must not overwrite the file
        # the job's next attempt resumes from (the resume checks the file exists, not the column)
        with session_scope(self.settings.database_url) as s:
            won = s.execute(update(Job).where(*fenced(self.job_id, self.attempt))
                            .values(checkpoint_path=artifacts.checkpoint_relpath(self.job_id))).rowcount
        if not won:
            self.heartbeat.lost = True
            return
        checkpoint.meta = {**checkpoint.meta, "job_id": self.job_id, "attempt": self.attempt}
        self.checkpoint_abspath.parent.mkdir(parents=True, exist_ok=True)
        ckpt_io.save(self.checkpoint_abspath, checkpoint)   # atomic: temp file, fsync, rename
        self._checkpoint_saved_at = now
