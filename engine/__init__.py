"""chainrule's training engine: layers, losses and optimizers written by hand on torch tensors.

No torch.nn.Module, no torch.optim, no autograd on the training path: every backward pass is
written out. `chainrule.twin` builds the equivalent torch.nn module, the reference the tests compare with.
"""
from . import losses, optim, schedules
from . import diagnostics
from .checkpoint import Checkpoint
from .data import TASKS, check_compatible
from .model import BackwardError, Model, Plan, SpecError, plan
from .shapes import format_shape
from .spec import ModelSpec
from .train import (Callbacks, DiagnosisStop, FitResult, NonFiniteError, Progress, TrainingError, TrainStep,
                    evaluate, fit)
from .gradcheck import gradcheck   # engine.gradcheck(model, loss, x, y) is the function

__all__ = ["Model", "BackwardError", "ModelSpec", "Plan", "SpecError", "plan", "fit", "evaluate", "TrainStep",
           "Callbacks", "Progress", "FitResult", "TrainingError", "NonFiniteError", "DiagnosisStop", "Checkpoint",
           "check_compatible", "format_shape", "TASKS", "gradcheck", "diagnostics", "losses", "optim",
           "schedules"]
