"""fit's side of the diagnostics (engine.diagnostics): when the init report is taken, which observer
measures the health batch, and when findings are reported and stop the run.

    watch = Watch(config.diagnostics, callbacks)
    watch.begin(model, loss, rows, batch_size, run)   # fresh: the init report at step 0; resumed: replay
    outputs = watch.observer()                        # for the health step's forward
    findings = watch.judge(metrics)                   # into metrics["findings"], before on_epoch_end
    watch.report(findings)                            # after on_epoch_end: on_findings, DiagnosisStop
"""
from __future__ import annotations

from typing import Any

from .. import health
from ..diagnostics import ActivationStats, Diagnosis, Diagnostics, Finding, init_report
from ..diagnostics.input_scale import input_scale
from .callbacks import Callbacks
from .errors import DiagnosisStop, NonFiniteError
from .windows import LANGUAGE_MODEL, first_windows


class Watch:
    def __init__(self, config: Diagnostics, callbacks: Callbacks):
        self.config, self.callbacks = config, callbacks
        self.diagnosis = Diagnosis(config)

    def begin(self, model, loss, rows, batch_size: int, run) -> None:
        """A fresh run: the init report on the first batch of training rows, and its findings. A resumed
        run: the report it was saved with, and the rules' state rebuilt from its history."""
        if not self.config.enabled:
            return
        if run.epoch == 0 and run.init_report is None:
            if rows.kind == LANGUAGE_MODEL:
                xb, yb = first_windows(rows, batch_size, model.input_shape[0])
            else:
                n = min(batch_size, rows.X_train.shape[0])
                xb, yb = rows.X_train[:n], rows.y_train[:n]
            run.init_report = init_report(model, loss, xb, yb)
            if rows.kind != LANGUAGE_MODEL:    # over every training row: the unscaled_inputs rule reads it
                run.init_report["input_scale"] = input_scale(model, rows.X_train)
            self.diagnosis = Diagnosis(self.config, run.init_report)
            findings = self.diagnosis.start()
            run.init_report["findings"] = [f.as_dict() for f in findings]
            self.callbacks.on_init_report(run.init_report)
            self.report(findings)
            return
        self.diagnosis = Diagnosis(self.config, run.init_report)
        self.diagnosis.replay(run.history)

    def observer(self) -> health.OutputStats:
        return ActivationStats() if self.config.enabled else health.OutputStats()

    def judge(self, metrics: dict[str, Any]) -> list[Finding]:
        findings = self.diagnosis.after_epoch(metrics)
        if self.config.enabled:
            metrics["findings"] = [f.as_dict() for f in findings]
        return findings

    def report(self, findings: list[Finding]) -> None:
        """Hand findings to the callbacks; raise DiagnosisStop for the first one named in stop_on."""
        if findings:
            self.callbacks.on_findings([f.as_dict() for f in findings])
        stop = self.diagnosis.stopping(findings)
        if stop is not None:
            raise DiagnosisStop(stop)

    def non_finite(self, error: NonFiniteError) -> None:
        findings = self.diagnosis.non_finite(error)
        if findings:
            self.callbacks.on_findings([f.as_dict() for f in findings])
