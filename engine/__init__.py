"""chainrule's training engine: layers, losses and optimizers written by hand on torch tensors.

No torch.nn.Module, no torch.optim, no autograd: every backward pass is written out.
"""
from . import losses, optim, schedules
from .checkpoint import Checkpoint
from .data import TASKS, check_compatible
from .model import BackwardError, Model, Plan, SpecError, plan
from .shapes import format_shape
from .spec import ModelSpec
from .train import (Callbacks, FitResult, NonFiniteError, Progress, TrainingError, TrainStep, evaluate,
                    fit)

__all__ = ["Model", "BackwardError", "ModelSpec", "Plan", "SpecError", "plan", "fit", "evaluate", "TrainStep",
           "Callbacks", "Progress", "FitResult", "TrainingError", "NonFiniteError", "Checkpoint",
           "check_compatible", "format_shape", "TASKS", "losses", "optim", "schedules"]
