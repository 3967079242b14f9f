"""What fit reports while it runs (Callbacks, Progress) and what it returns (FitResult)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..checkpoint import Checkpoint


@dataclass
class Progress:
    epoch: int          # current epoch, 1-based
    epochs: int         # epochs in the run
    step: int           # optimizer steps done (global)
    total_steps: int
    fraction: float     # step / total_steps


class Callbacks:
    """Hooks the worker overrides; every method is a no-op here.

    on_step runs after every optimizer step and should_stop before every step: both must be
    cheap (throttle inside). A finding of a rule named in diagnostics.stop_on ends fit with
    DiagnosisStop (a TrainingError) after on_findings has seen it. on_checkpoint runs every `checkpoint_every` epochs, when the run
    ends at an epoch end, and once more when it is cancelled at an epoch boundary
    (a cancel mid-epoch leaves the last epoch's checkpoint as the resume point).
    """

    def on_step(self, progress: Progress) -> None:
        pass

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        pass

    def on_init_report(self, report: dict[str, Any]) -> None:
        """The initialization report (engine.diagnostics.init_report), once, before the first step of a
        fresh run; its findings are in report["findings"] and are also passed to on_findings."""

    def on_findings(self, findings: list[dict[str, Any]]) -> None:
        """New findings (engine.diagnostics.findings, JSON form): after the init report, after each
        on_epoch_end (they are also in that epoch's metrics["findings"]), and when the loss turns
        non-finite, just before fit raises NonFiniteError."""


@dataclass
class FitResult:
    status: str                      # "completed" | "early_stopped" | "cancelled"
    epochs_completed: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    total_time_s: float = 0.0
