"""A sweep's trial is a job like any other, plus one thing: at each epoch end its metric goes to
the sweep's pruner (core.sweeps.pruning), and a trial told to stop stops at that epoch boundary
(fit's should_stop, checked before the next epoch), to end `cancelled` with reason `pruned`."""
from __future__ import annotations

from typing import Any

from core.lifecycle import Claim
from core.settings import Settings
from core.sweeps.pruning import TrialReporter

from .callbacks import Heartbeat, JobCallbacks


class TrialCallbacks(JobCallbacks):
    """JobCallbacks that report the sweep metric each epoch; stop once the pruner has said so
    (at start too, when it had said so to an attempt whose worker was lost)."""

    def __init__(self, settings: Settings, claimed: Claim, heartbeat: Heartbeat, *, epochs: int):
        super().__init__(settings, claimed, heartbeat)
        self.epochs = epochs
        self.reporter = TrialReporter(settings, claimed.job_id)
        self.metric = self.reporter.spec.metric

    @property
    def pruned(self) -> str | None:
        return self.reporter.pruned

    def should_stop(self) -> bool:
        return self.reporter.pruned is not None or super().should_stop()

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        super().on_epoch_end(metrics)
        if self.lost or self.reporter.pruned is not None:
            return
        epoch, value = int(metrics["epoch"]), metrics.get(self.metric)
        self.reporter.report(epoch, float(value) if value is not None else None, final=epoch >= self.epochs)


def callbacks_for(settings: Settings, claimed: Claim, heartbeat: Heartbeat, sweep_id: str | None,
                  epochs: int) -> JobCallbacks:
    """TrialCallbacks for a sweep's trial, JobCallbacks for any other job."""
    if sweep_id is None:
        return JobCallbacks(settings, claimed, heartbeat)
    return TrialCallbacks(settings, claimed, heartbeat, epochs=epochs)
