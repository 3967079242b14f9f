"""Diagnostics in the seed's own terms: activation statistics, the initialization report, and rules
that turn the numbers into findings (vanishing / exploding gradients, dead relus, saturation, poor
initialization, update ratio, loss not decreasing, overfitting, divergence, non-finite values).

    fit(..., config={"diagnostics": {"rules": {"dead_relu": {"threshold": 0.6}}, "stop_on": ["divergence"]}})

`fit` measures the statistics on the batch whose gradient health it already measures, writes each
epoch's findings into its metrics (`metrics["findings"]`) and reports them to Callbacks.on_findings;
the init report goes to Callbacks.on_init_report; a rule in stop_on raises engine.DiagnosisStop.
docs/diagnostics.md has each rule and its default.
"""
from ..spec.diagnostics import RULES, Diagnostics
from .diagnosis import Diagnosis
from .findings import SEVERITIES, Finding
from .init_report import init_report, weights_digest
from .rules import SEVERITY
from .stats import ActivationStats, saturated_fraction

__all__ = ["RULES", "Diagnostics", "Diagnosis", "Finding", "SEVERITIES", "SEVERITY",
           "init_report", "weights_digest", "ActivationStats", "saturated_fraction"]
