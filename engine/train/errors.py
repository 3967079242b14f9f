"""Why a run stops early: TrainingError, NonFiniteError with the layer it points at, DiagnosisStop."""
from __future__ import annotations

import torch


class TrainingError(Exception):
    """A run that cannot go on; `code` is a stable machine-readable reason."""
    code = "training_error"


class NonFiniteError(TrainingError):
    """The loss became NaN / inf. Names the step, the epoch and the layer it points at."""
    code = "non_finite"

    def __init__(self, message: str, *, value: float, step: int | None = None, epoch: int | None = None,
                 layer_key: str | None = None, layer_kind: str | None = None, found_in: str | None = None):
        super().__init__(message)
        self.value, self.step, self.epoch = value, step, epoch
        self.layer_key, self.layer_kind, self.found_in = layer_key, layer_kind, found_in

    @classmethod
    def describe(cls, value: float, step: int | None, epoch: int | None, key: str | None,
                 kind: str | None, found_in: str | None) -> "NonFiniteError":
        where = "" if step is None else f" at step {step}" + ("" if epoch is None else f" (epoch {epoch})")
        label = None if key is None else (f"layer {key}" if key.isdigit() else f"layer {key!r}") + f" ({kind})"
        if found_in == "gradient":
            cause = f"first non-finite gradient in {label}"
        elif found_in == "weights":
            cause = f"no non-finite gradient; first non-finite weights in {label}"
        else:
            cause = "no layer has non-finite gradients or weights (check the data and the loss)"
        return cls(f"loss became {value}{where}; {cause}", value=value, step=step, epoch=epoch,
                   layer_key=key, layer_kind=kind, found_in=found_in)

    def located(self, step: int, epoch: int) -> "NonFiniteError":
        return self.describe(self.value, step, epoch, self.layer_key, self.layer_kind, self.found_in)


class DiagnosisStop(TrainingError):
    """A finding of a rule named in diagnostics.stop_on (engine.diagnostics): the run ends failed with
    the rule's code as its code and the finding's message."""

    def __init__(self, finding):
        super().__init__(finding.message)
        self.code = finding.code
        self.finding = finding


def find_nonfinite_layer(model) -> tuple[str | None, str | None, str | None]:
    """(key, type, "gradient" | "weights" | None): the first layer, in backward order (output to
    input), whose gradients are not all finite; else the first layer, input to output, with
    non-finite weights; else (None, None, None)."""
    items = list(model.layer_items())
    for key, layer in reversed(items):
        if any(not bool(torch.isfinite(g).all()) for g in layer.grads.values()):
            return key, layer.spec.type, "gradient"
    for key, layer in items:
        if any(not bool(torch.isfinite(p).all()) for p in layer.params.values()):
            return key, layer.spec.type, "weights"
    return None, None, None
