"""What a rule says: a Finding, JSON-ready (engine.train.DiagnosisStop carries one that stops a run).

A finding's JSON form (the service adds `id`, increasing per job, in the order they were found):

    {"code": "dead_relu", "severity": "warning", "epoch": 3, "step": 120,
     "layer": {"key": "1", "type": "relu"}, "value": 0.72, "threshold": 0.5,
     "message": "layer 1 (relu): 72% of its units output 0 for every sample ...",
     "hint": "lower lr ..."}

`layer` is null for a finding about the whole run (loss_not_decreasing, overfitting, divergence);
`value` and `threshold` are null where there is no number (a NaN loss). epoch 0, step 0: found at
initialization, before any update.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

SEVERITIES = ("info", "warning", "error")


def layer_label(key: str, kind: str) -> str:
    """How a finding names a layer: "layer 3 (linear)", or "layer 'head' (linear)" in a DAG."""
    return (f"layer {key}" if key.isdigit() else f"layer {key!r}") + f" ({kind})"


def finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class Signal:
    """A rule's condition as it holds at one epoch: about a layer (key) or the whole run (None)."""
    layer: str | None
    value: float | None
    threshold: float | None
    message: str
    hint: str


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    epoch: int
    step: int
    layer: dict[str, str] | None
    value: float | None
    threshold: float | None
    message: str
    hint: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, code: str, severity: str, epoch: int, step: int, signal: Signal,
           types: dict[str, str]) -> "Finding":
        layer = None if signal.layer is None else {"key": signal.layer, "type": types.get(signal.layer, "?")}
        return cls(code, severity, epoch, step, layer, finite_or_none(signal.value),
                   finite_or_none(signal.threshold), signal.message, signal.hint)

