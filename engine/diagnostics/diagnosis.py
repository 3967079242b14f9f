"""Diagnosis: the rules of one run, evaluated after each epoch; findings at the onset of a condition.

    diagnosis = Diagnosis(config.diagnostics, init_report)   # init_report: None when not measured
    findings = diagnosis.start()                             # poor_initialization, at step 0
    findings = diagnosis.after_epoch(metrics)                # every epoch, in order
    stop = diagnosis.stopping(findings)                      # the first one named in stop_on, or None

A condition (rule, layer, threshold) that holds for `consecutive` epochs in a row (1 unless the
rule says otherwise) gives one finding, the epoch it starts to count; it gives another only
after it has stopped holding and starts again. All state is a function of the epochs' metrics,
so a resumed run rebuilds it with `replay(history)` and finds exactly what the uninterrupted
run finds.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..spec.diagnostics import Diagnostics
from .findings import Finding, Signal
from .input_scale import unscaled_inputs
from .rules import EPOCH_RULES, NON_FINITE_HINT, SEVERITY, initial_signals
from .trace import Trace

if TYPE_CHECKING:                       # engine.train imports this package: no import back at run time
    from ..train.errors import NonFiniteError


class Diagnosis:
    def __init__(self, config: Diagnostics, init_report: dict[str, Any] | None = None):
        self.config, self.init_report = config, init_report
        self.trace = Trace(init_report.get("loss") if init_report else None)
        self._streaks: dict[tuple[str, str | None, float | None], int] = {}

    def _rules(self):
        for code, rule in EPOCH_RULES.items():
            cfg = getattr(self.config.rules, code)
            if cfg.enabled:
                yield code, rule, cfg

    def start(self) -> list[Finding]:
        """Findings of the init report (epoch 0, step 0): the inputs' scales, then the initialization."""
        if not (self.config.enabled and self.init_report):
            return []
        types = {k: e["type"] for k, e in self.init_report["layers"].items()}
        signals = {"unscaled_inputs": lambda cfg: unscaled_inputs(cfg, self.init_report.get("input_scale")),
                   "poor_initialization": lambda cfg: initial_signals(cfg, self.init_report)}
        return [Finding.of(code, SEVERITY[code], 0, 0, s, types) for code, signals_of in signals.items()
                if getattr(self.config.rules, code).enabled for s in signals_of(getattr(self.config.rules, code))]

    def after_epoch(self, metrics: dict[str, Any]) -> list[Finding]:
        """The findings that start with this epoch (metrics: one epoch of engine.fit's history)."""
        self.trace.add(metrics)
        if not self.config.enabled:
            return []
        types = {k: e["type"] for k, e in (metrics.get("layers") or {}).items()}
        streaks: dict[tuple[str, str | None, float | None], int] = {}
        found = []
        for code, rule, cfg in self._rules():
            for signal in rule(cfg, self.trace):
                key = (code, signal.layer, signal.threshold)
                streaks[key] = self._streaks.get(key, 0) + 1
                if streaks[key] == getattr(cfg, "consecutive", 1):
                    found.append(Finding.of(code, SEVERITY[code], int(metrics["epoch"]), int(metrics.get("steps", 0)),
                                            signal, types))
        self._streaks = streaks
        return found

    def replay(self, history: list[dict[str, Any]]) -> None:
        """Rebuild the state of a run resumed after these epochs (their findings were reported then)."""
        for metrics in history:
            self.after_epoch(metrics)

    def non_finite(self, error: NonFiniteError) -> list[Finding]:
        """The finding of a loss that became NaN / inf mid-epoch (the run stops with the error)."""
        if not (self.config.enabled and self.config.rules.non_finite.enabled):
            return []
        signal = Signal(error.layer_key, None, None, str(error), NON_FINITE_HINT)
        types = {error.layer_key: error.layer_kind} if error.layer_key else {}
        return [Finding.of("non_finite", SEVERITY["non_finite"], error.epoch or 0, error.step or 0, signal, types)]

    def stopping(self, findings: list[Finding]) -> Finding | None:
        return next((f for f in findings if f.code in self.config.stop_on), None)
