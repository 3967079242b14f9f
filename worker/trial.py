"""A sweep's trial is a job like any other, plus one thing: at each epoch end its metric goes to
the sweep's pruner (core.sweeps.pruning), and a trial told to stop stops at that epoch boundary
(fit's should_stop, checked before the next epoch), to end `cancelled` with reason `pruned`."""
from __future__ import annotations

from typing import Any

from core.lifecycle import Claim
from core.settings import Settings
from core.sweeps import SweepRequest, pruning
from core.tables import Sweep

from .callbacks import Heartbeat, JobCallbacks


class TrialCallbacks(JobCallbacks):
    """JobCallbacks that report the sweep metric each epoch; `pruned` is the pruner's message once
    it has said stop (set at start when it had said so to an attempt whose worker was lost)."""

    def __init__(self, settings: Settings, claimed: Claim, heartbeat: Heartbeat, *, metric: str, epochs: int):
        super().__init__(settings, claimed, heartbeat)
        self.metric, self.epochs = metric, epochs
        self.pruned: str | None = pruning.pruned_message(settings, claimed.job_id)

    def should_stop(self) -> bool:
        return self.pruned is not None or super().should_stop()

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        super().on_epoch_end(metrics)
        if self.lost or self.pruned is not None:
            return
        epoch = int(metrics["epoch"])
        value = metrics.get(self.metric)
        self.pruned = pruning.report(self.settings, self.job_id, epoch,
                                     float(value) if value is not None else None, final=epoch >= self.epochs)


def callbacks_for(settings: Settings, claimed: Claim, heartbeat: Heartbeat, sweep: Sweep | None,
                  epochs: int) -> JobCallbacks:
    """TrialCallbacks for a sweep's trial, JobCallbacks for any other job."""
    if sweep is None:
        return JobCallbacks(settings, claimed, heartbeat)
    metric = SweepRequest.model_validate(sweep.request).metric
    return TrialCallbacks(settings, claimed, heartbeat, metric=metric, epochs=epochs)
