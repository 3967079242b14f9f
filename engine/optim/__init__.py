"""Optimizers with torch.optim's exact update rules, written on raw tensors.

Each update below is the single-tensor (foreach=False, fused=False) variant of
torch/optim/{sgd,rmsprop,adam}.py, op for op (an out-of-place op may run in place on a
temporary of the step: the same roundings), so a run matches torch.optim to the last bits.
No autograd, no torch.optim. Between steps an optimizer keeps its state (Adam: m and v) and
nothing else the size of the parameters.

Storage: every state buffer (`exp_avg`, `momentum_buffer`, ...) is ONE flat tensor
of all parameters' elements, with a per-parameter view of it. When the parameters
tile one contiguous 1-D piece of memory in order (as `Model.flat_params` does), `step`
runs each update once on the whole flat buffer: a handful of kernels per step
however many parameters there are. Otherwise it runs the same update per
parameter on the views. Both give the same numbers.

    opt = make({"type": "adam", "lr": 1e-3}, model.parameters())
    opt.lr = schedule.lr_at(opt.steps)      # the caller sets lr before each step
    clip_grad_norm_(model.flat_grads, 1.0)  # optional
    opt.step(model.flat_grads)              # or opt.step(model.grads()): checked, then the same
"""
from __future__ import annotations

from typing import Any, Mapping

from pydantic import TypeAdapter
from torch import Tensor

from .. import spec as specs
from .base import Optimizer, clip_grad_norm_, flat_base
from .rules import SGD, Adam, AdamW, RMSprop

__all__ = ["make", "parse", "Optimizer", "flat_base", "clip_grad_norm_"]

_ADAPTER: TypeAdapter = TypeAdapter(specs.OptimizerSpec)


def parse(spec: Any) -> specs.SGD | specs.RMSprop | specs.Adam | specs.AdamW:
    """An OptimizerSpec from a model, a dict or a bare type name like "adam"."""
    if isinstance(spec, (specs.SGD, specs.RMSprop, specs.Adam)):
        return spec
    return _ADAPTER.validate_python(spec)


_CLASSES: dict[str, type[Optimizer]] = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def make(spec: Any, params: Mapping[str, Tensor]) -> Optimizer:
    """An optimizer for `params` ({name: tensor}, updated in place) from an OptimizerSpec,
    a dict like {"type": "sgd", "momentum": 0.9} or a bare name like "adam"."""
    spec = parse(spec)
    return _CLASSES[spec.type](spec, params)
