"""engine.schedules against torch.optim.lr_scheduler, stepped once per optimizer step."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.optim import lr_scheduler as S

from engine import schedules

BASE = 0.1
TOTAL = 120


def torch_lrs(main_factory, n, warmup=0, start=1 / 3, base=BASE):
    """torch's lr for each of n optimizer steps (read before the step, scheduler stepped after)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main = main_factory(opt)
        if warmup:
            warm = S.LinearLR(opt, start_factor=start, end_factor=1.0, total_iters=warmup)
            sched = S.SequentialLR(opt, [warm, main], milestones=[warmup])
        else:
            sched = main
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


def assert_lrs(ours, ref, tol=1e-10):
    assert len(ours) == len(ref)
    for k, (a, b) in enumerate(zip(ours, ref)):
        assert abs(a - b) <= tol * abs(b), f"step {k}: {a!r} vs torch {b!r}"


CASES = [
    ("constant", {"type": "constant"}, lambda o: S.ConstantLR(o, factor=1.0)),
    ("step", {"type": "step", "step_size": 7, "gamma": 0.5}, lambda o: S.StepLR(o, 7, gamma=0.5)),
    ("step-default-gamma", {"type": "step", "step_size": 30}, lambda o: S.StepLR(o, 30)),
    ("exponential", {"type": "exponential", "gamma": 0.97}, lambda o: S.ExponentialLR(o, 0.97)),
    ("cosine-t_max", {"type": "cosine", "t_max": 50, "eta_min": 1e-3},
     lambda o: S.CosineAnnealingLR(o, 50, eta_min=1e-3)),
    ("cosine-past-t_max", {"type": "cosine", "t_max": 25},  # keeps following torch's cosine back up
     lambda o: S.CosineAnnealingLR(o, 25)),
]


@pytest.mark.parametrize("name,spec,factory", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("warmup,start", [(0, 1 / 3), (10, 1 / 3), (5, 0.01), (1, 0.5)])
def test_matches_torch(name, spec, factory, warmup, start):
    spec = dict(spec, warmup_steps=warmup, warmup_start_factor=start)
    sched = schedules.make(spec, BASE, TOTAL)
    assert_lrs([sched.lr_at(k) for k in range(TOTAL)], torch_lrs(factory, TOTAL, warmup, start))


@pytest.mark.parametrize("warmup", [0, 20])
def test_cosine_default_t_max_is_steps_after_warmup(warmup):
    sched = schedules.make({"type": "cosine", "warmup_steps": warmup, "eta_min": 0.002}, BASE, TOTAL)
    assert sched.t_max == TOTAL - warmup
    ref = torch_lrs(lambda o: S.CosineAnnealingLR(o, TOTAL - warmup, eta_min=0.002), TOTAL, warmup)
    assert_lrs([sched.lr_at(k) for k in range(TOTAL)], ref)
    assert sched.lr_at(TOTAL) == pytest.approx(0.002, rel=1e-12)  # reaches eta_min after the last step


def test_bare_name():
    sched = schedules.make("constant", BASE, TOTAL)
    assert sched.name == "constant"
    assert_lrs([sched.lr_at(k) for k in range(TOTAL)], torch_lrs(lambda o: S.ConstantLR(o, factor=1.0), TOTAL))


def test_warmup_closed_form():
    sched = schedules.make({"type": "constant", "warmup_steps": 4, "warmup_start_factor": 0.2}, 1.0, 10)
    assert [sched.lr_at(k) for k in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0], rel=1e-15)


def test_edge_cases_and_errors():
    # cosine t_max is at least 1 even when warmup covers the whole run
    sched = schedules.make({"type": "cosine", "warmup_steps": 10}, BASE, 5)
    assert sched.t_max == 1 and math.isfinite(sched.lr_at(12))
    assert schedules.make("constant", BASE, 0).lr_at(0) == BASE
    assert schedules.make({"type": "exponential", "gamma": 0.5}, 1.0, 10).name == "exponential"
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        sched.lr_at(-1)
    with pytest.raises(ValueError, match="total_steps must be >= 0, got -3"):
        schedules.make("constant", BASE, -3)
    with pytest.raises(ValueError, match="base_lr must be a finite number > 0, got 0.0"):
        schedules.make("constant", 0.0, 10)
    with pytest.raises(Exception, match="step_size"):
        schedules.make("step", BASE, 10)  # step_size is required
    with pytest.raises(Exception, match="onecycle"):
        schedules.make("onecycle", BASE, 10)
