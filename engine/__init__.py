"""chainrule's training engine: layers, losses and optimizers written by hand on torch tensors.

No torch.nn.Module, no torch.optim, no autograd on the training path: every backward pass is
written out. `chainrule.twin` builds the equivalent torch.nn module, the reference the tests compare with.

The names below load on first use (PEP 562), so that importing a torch-free part (`engine.spec`,
`engine.tasks`) loads no torch: the CLI's admin commands (`keys`, `migrate`) start in half the time.
"""
from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("losses", "optim", "schedules", "diagnostics", "checkpoint")
_NAMES = {   # name -> the submodule that defines it
    "Checkpoint": "checkpoint",
    "TASKS": "tasks", "check_compatible": "data",
    "BackwardError": "model", "Model": "model", "Plan": "model", "SpecError": "model", "plan": "model",
    "format_shape": "shapes",
    "ModelSpec": "spec",
    **{name: "train" for name in ("Callbacks", "DiagnosisStop", "FitResult", "NonFiniteError", "Progress",
                                  "TrainingError", "TrainStep", "evaluate", "fit")},
}
__all__ = [*_NAMES, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
