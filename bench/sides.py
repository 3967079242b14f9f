"""The sides of a comparison, built for one case: the engine's TrainStep, torch.nn + autograd +
torch.optim eagerly, torch.compile of that torch module, and the engine with its own formulas
compiled (its `compile` option, where this engine has it). Same initial weights, same batches."""
from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from chainrule.twin import twin
from engine import Model, losses, optim
from engine.spec import pair as spec_pair
from engine.train import TrainStep

from .cases import Case

LR = 1e-3


def torch_module(model: Model) -> nn.Module:
    """The torch.nn twin of an engine model (chainrule.twin), holding a copy of its weights."""
    net = twin(model.spec, model.input_shape, dtype=model.dtype, device=model.device)
    net.load_state_dict(model.state_dict(), strict=True)
    return net


def torch_adam(params, device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    """The fastest torch.optim.Adam this device runs: fused, else foreach."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=LR, fused=True), "fused"
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=LR, foreach=True), "foreach"


def engine_compiles() -> bool:
    """This engine has the option to run its formulas through torch.compile (Model.from_spec(compile=))."""
    return "compile" in inspect.signature(Model.from_spec).parameters


@dataclass
class Pair:
    """One case built on both sides, same weights; `engine_step()` / `torch_step()` run one step."""
    case: Case
    model: Model
    net: nn.Module
    engine_step: Callable[[], float]
    torch_step: Callable[[], float]
    adam: str
    batches: list[tuple[torch.Tensor, torch.Tensor]]


def batches(case: Case, device: torch.device, dtype: torch.dtype, batch: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed + 1)
    return [(torch.randn((batch, *case.input_shape), generator=g, dtype=torch.float64).to(device, dtype),
             torch.randint(0, case.classes, (batch,), generator=g).to(device)) for _ in range(n)]


def cycle(step: Callable[[torch.Tensor, torch.Tensor], float], data) -> Callable[[], float]:
    """A step function that walks the batches round and round."""
    k = 0

    def run() -> float:
        nonlocal k
        x, y = data[k % len(data)]
        k += 1
        return step(x, y)
    return run


def engine_step_fn(model: Model) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """fit's step: cross-entropy (labels checked once up front, as fit does) and Adam."""
    loss = losses.make("cross_entropy", check_labels=False)
    step = TrainStep(model, loss, optim.make({"type": "adam", "lr": LR}, model.parameters()), None)

    def run(x, y) -> float:
        step(x, y)
        step.output = None               # as fit lets go of it once its metrics have read it
        return step.value
    return run


def torch_step_fn(net: nn.Module, device: torch.device, set_to_none: bool = True
                  ) -> tuple[Callable[[torch.Tensor, torch.Tensor], float], str]:
    """The textbook loop: zero_grad, forward, loss, backward, step; the loss read back as fit reads it.
    set_to_none: zero_grad's default since torch 2.0, the gradients freed until the backward remakes them."""
    opt, adam = torch_adam(net.parameters(), device)

    def run(x, y) -> float:
        opt.zero_grad(set_to_none=set_to_none)
        value = F.cross_entropy(net(x), y)
        value.backward()
        opt.step()
        return value.item()
    return run, adam


def build(case: Case, device: str, dtype: torch.dtype = torch.float32, n_batches: int = 4,
          batch: int | None = None, seed: int = 0) -> Pair:
    dev = torch.device(device)
    model = Model.from_spec({"layers": case.layers}, case.input_shape, seed=seed, dtype=dtype, device=dev)
    net = torch_module(model)
    data = batches(case, dev, dtype, batch or case.batch, n_batches, seed)
    torch_step, adam = torch_step_fn(net, dev)
    return Pair(case, model, net, cycle(engine_step_fn(model), data), cycle(torch_step, data), adam, data)


def compiled_sides(p: Pair) -> tuple[dict[str, Callable[[], float]], dict[str, float], dict[str, str]]:
    """The compiled sides of a pair, each warmed by its first step: ({side: step}, {side: seconds of the
    first step, the cold start}, {side: why it is missing}). "torch.compile": torch.compile of the torch
    module (default mode), fused Adam as the eager side; "engine+compile": the engine with compile=True."""
    steps, cold, missing = {}, {}, {}
    makers = {"torch.compile": lambda: _torch_compiled(p), "engine+compile": lambda: _engine_compiled(p)}
    for side, make in makers.items():
        try:
            step = make()
            started = time.perf_counter()
            with torch.set_grad_enabled(side == "torch.compile"):
                step()
            cold[side], steps[side] = time.perf_counter() - started, step
        except Exception as e:                         # no compiler, an unsupported op: the column says why
            missing[side] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return steps, cold, missing


def _torch_compiled(p: Pair) -> Callable[[], float]:
    net = copy.deepcopy(p.net)
    step, _ = torch_step_fn(torch.compile(net), p.model.device)
    return cycle(step, p.batches)


def _engine_compiled(p: Pair) -> Callable[[], float]:
    if not engine_compiles():
        raise NotImplementedError("this engine has no compile option")
    model = Model.from_spec(p.model.spec, p.model.input_shape, dtype=p.model.dtype, device=p.model.device,
                            compile=True)
    model.load_state_dict(p.model.state_dict())
    return cycle(engine_step_fn(model), p.batches)


def step_flops(model: Model, batch: int) -> int:
    """Matmul / conv FLOPs of one training step (2 per multiply-add).

    Forward 2·M per layer of M multiply-adds; backward 4·M (weight grad and input grad),
    except the layer that reads the model input, whose input gradient nobody needs: 2·M.
    Elementwise work, the loss and the optimizer are not counted.
    """
    total = 0
    first = True
    for layer in model.layers:
        s = layer.spec
        if s.type == "linear":
            macs = batch * layer.in_shapes[0][0] * s.out_features
        elif s.type == "conv2d":
            c, _, _ = layer.in_shapes[0]
            kh, kw = spec_pair(s.kernel_size)
            _, ho, wo = layer.out_shape
            macs = batch * s.out_channels * ho * wo * c * kh * kw
        else:
            continue
        total += 2 * macs + (2 if first else 4) * macs
        first = False
    return total
