"""Learning-rate schedules in closed form, counted in optimizer steps.

`lr_at(k)` is the lr for optimizer step index k (k steps already taken):

    k < warmup_steps:  base_lr * (s + (1 - s) * k / warmup_steps)   torch LinearLR(s, 1, warmup_steps)
    otherwise:         the main schedule at j = k - warmup_steps
        constant       base_lr
        step           base_lr * gamma ** (j // step_size)
        exponential    base_lr * gamma ** j
        cosine         eta_min + (base_lr - eta_min) * (1 + cos(pi * j / t_max)) / 2,
                       t_max defaulting to total_steps - warmup_steps (at least 1)

This is what torch.optim.lr_scheduler's LinearLR + SequentialLR(milestones=[warmup_steps])
give when stepped once per optimizer step, without their recursive rounding.
"""
from __future__ import annotations

import math
from typing import Any

from pydantic import TypeAdapter

from .spec import ConstantLR, CosineAnnealingLR, ExponentialLR, ScheduleSpec, StepLR

_ADAPTER: TypeAdapter = TypeAdapter(ScheduleSpec)
_SPEC_TYPES = (ConstantLR, StepLR, ExponentialLR, CosineAnnealingLR)


def parse(spec: Any) -> ConstantLR | StepLR | ExponentialLR | CosineAnnealingLR:
    """A ScheduleSpec from a model, a dict or a bare type name like "constant"."""
    if isinstance(spec, _SPEC_TYPES):
        return spec
    return _ADAPTER.validate_python(spec)


class Schedule:
    def __init__(self, spec: Any, base_lr: float, total_steps: int):
        base_lr, total_steps = float(base_lr), int(total_steps)
        if not base_lr > 0 or not math.isfinite(base_lr):
            raise ValueError(f"schedule base_lr must be a finite number > 0, got {base_lr}")
        if total_steps < 0:
            raise ValueError(f"schedule total_steps must be >= 0, got {total_steps}")
        self.spec, self.name = spec, spec.type
        self.base_lr, self.total_steps = base_lr, total_steps
        self.warmup_steps = spec.warmup_steps
        self.t_max = (max(1, total_steps - spec.warmup_steps) if spec.type == "cosine" and spec.t_max is None
                      else getattr(spec, "t_max", None))

    def lr_at(self, step: int) -> float:
        """The lr to use for optimizer step index `step` (the count of steps already taken)."""
        if step < 0:
            raise ValueError(f"schedule step must be >= 0, got {step}")
        w, s = self.warmup_steps, self.spec
        if step < w:
            f = s.warmup_start_factor
            return self.base_lr * (f + (1 - f) * step / w)
        j = step - w
        if s.type == "constant":
            return self.base_lr
        if s.type == "step":
            return self.base_lr * s.gamma ** (j // s.step_size)
        if s.type == "exponential":
            return self.base_lr * s.gamma ** j
        return s.eta_min + (self.base_lr - s.eta_min) * (1 + math.cos(math.pi * j / self.t_max)) / 2

    def __repr__(self) -> str:
        return f"Schedule({self.spec!r}, base_lr={self.base_lr}, total_steps={self.total_steps})"


def make(spec: Any, base_lr: float, total_steps: int) -> Schedule:
    """A schedule from a ScheduleSpec, a dict like {"type": "step", "step_size": 100} or a bare
    name like "constant"; total_steps is the run's optimizer step count (cosine's default t_max)."""
    return Schedule(parse(spec), base_lr, total_steps)
