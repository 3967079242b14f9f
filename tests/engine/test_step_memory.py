"""What a training step keeps (issue 9): an optimizer holds its state and nothing else the size of
the parameters; letting the update write its temporaries into the spent gradients takes the same
steps; between steps the engine holds no more tensor bytes than torch.nn + torch.optim."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from bench.cases import CASES
from bench.memory_use import measure
from bench.sides import batches, cycle, engine_step_fn, torch_module, torch_step_fn
from engine import Model, optim

F64 = torch.float64
OPTIMIZERS = [{"type": "adam"}, {"type": "adam", "amsgrad": True, "weight_decay": 0.01},
              {"type": "adamw", "weight_decay": 0.1}, {"type": "sgd", "momentum": 0.9, "nesterov": True,
                                                       "weight_decay": 0.01},
              {"type": "sgd"}, {"type": "rmsprop", "momentum": 0.5, "centered": True, "weight_decay": 0.01}]


def held_bytes(obj, exclude: set[int]) -> int:
    """Bytes of the distinct tensor storages reachable from obj's attributes, less those in `exclude`."""
    seen, total, stack = set(exclude), 0, [vars(obj)]
    while stack:
        item = stack.pop()
        if isinstance(item, Tensor):
            storage = item.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_an_optimizer_keeps_its_state_and_nothing_else(spec):
    model = Model.from_spec({"layers": [{"type": "linear", "out_features": 30}, {"type": "relu"},
                                        {"type": "linear", "out_features": 4}]}, (20,), dtype=F64)
    opt = optim.make({**spec, "lr": 0.01}, model.parameters())
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        model.flat_grads.copy_(torch.randn(model.n_parameters, generator=g, dtype=F64))
        opt.step(model.flat_grads, reuse_grads=step % 2 == 0)
        opt.step({k: v.clone() for k, v in model.grads().items()})      # gathered: a temporary of the step
    state = len(opt.buffer_names()) * model.n_parameters * 8
    small = 64                                                            # 0-dim tensors, if any
    assert state <= held_bytes(opt, {model.flat_params.untyped_storage().data_ptr()}) <= state + small


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_reusing_the_spent_gradients_takes_the_same_steps(spec):
    g = torch.Generator().manual_seed(1)
    start = torch.randn(300, generator=g, dtype=F64)
    params = [start.clone(), start.clone()]
    opts = [optim.make({**spec, "lr": 0.01}, {"w": p[:200].view(10, 20), "b": p[200:]}) for p in params]
    for _ in range(5):
        grad = torch.randn(300, generator=g, dtype=F64)
        opts[0].step(grad.clone(), reuse_grads=True)
        opts[1].step(grad)
    assert torch.equal(params[0], params[1])


@pytest.mark.parametrize("name", ["tiny MLP", "LN MLP", "ResNet DAG"])
def test_between_steps_the_engine_holds_no_more_than_torch(name):
    case = next(c for c in CASES if c.name == name)
    dev = torch.device("cpu")
    model = Model.from_spec({"layers": case.layers}, case.input_shape, seed=0)
    data = batches(case, dev, torch.float32, 4, 2, 0)
    engine = measure(lambda: cycle(engine_step_fn(Model.from_spec({"layers": case.layers}, case.input_shape)),
                                   data), False, dev)
    reference = measure(lambda: cycle(torch_step_fn(torch_module(model), dev)[0], data), True, dev)
    # parameters, gradients, Adam's m and v (4 x the parameter bytes), the buffers: torch's too
    assert 4 * model.n_parameters * 4 <= engine.persistent <= reference.persistent
