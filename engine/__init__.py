"""chainrule's training engine: layers, losses and optimizers written by hand on torch tensors.

No torch.nn.Module, no torch.optim, no autograd: every backward pass is written out.
"""
from .model import Model, Plan, SpecError, plan
from .spec import ModelSpec

__all__ = ["Model", "ModelSpec", "Plan", "SpecError", "plan"]
