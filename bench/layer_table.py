"""The per-layer table: one layer's forward + backward, the engine's against torch.nn + autograd.

Engine: the layer as a Model runs it inside a network (bound to the model's storage, under
torch.inference_mode as TrainStep runs, its output read by a later layer so its backward may
reuse it, dx wanted). Torch: the twin module on an input that requires grad, backward from the
same dy, parameter gradients reset to None first as zero_grad(set_to_none=True) does. Both
make dx and every parameter gradient. "engine+compile" is the same layer in a model built with
compile=True, for the layers whose formulas that option compiles.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from chainrule.twin import twin
from engine import Model, plan

from .cases import LayerCase
from .rounds import Side, interleave
from .sides import engine_compiles


@dataclass
class LayerResult:
    layer: str
    shape: str
    us: dict[str, float]                         # median microseconds per forward + backward, by side
    ratio: float                                 # median over rounds of torch time / engine time
    ratio_range: tuple[float, float]
    compiled_ratio: float | None = None          # the same for engine+compile, where it differs
    rounds: dict[str, list[float]] = field(default_factory=dict)


def _spec(case: LayerCase) -> tuple[dict, int]:
    """A model spec holding the layer (a merge reads two relus of the input) and the layer's index."""
    if len(case.inputs) == 1:
        return {"layers": [case.spec]}, 0
    branches = [{"type": "relu", "name": f"in{k}", "inputs": ["input"]} for k in range(len(case.inputs))]
    return {"layers": branches + [{**case.spec, "name": "merge", "inputs": [b["name"] for b in branches]}]}, \
        len(branches)


def _engine_fn(case: LayerCase, xs: list[torch.Tensor], dy: torch.Tensor, compiled: bool):
    spec, index = _spec(case)
    options = {"compile": True} if compiled else {}
    model = Model.from_spec(spec, case.inputs[0], seed=0, **options)
    layer = model.layers[index]
    layer.reuse_output, layer.need_dx = True, True      # as an inner layer of a network
    arg = xs if layer.merge else xs[0]

    def step():
        with torch.inference_mode():
            layer.forward(arg, True)
            layer.backward(dy)
    return step, model


def _torch_fn(case: LayerCase, model: Model, xs: list[torch.Tensor], dy: torch.Tensor):
    spec, index = _spec(case)
    leaves = [x.clone().requires_grad_(True) for x in xs]
    if len(xs) > 1:
        forward = (lambda a, b: a + b) if case.spec["type"] == "add" else (lambda a, b: torch.cat([a, b], 1))
        params = []
    else:
        net = twin(spec, case.inputs[0])
        net.load_state_dict(model.state_dict(), strict=True)
        forward, params = net, list(net.parameters())

    def step():
        for p in params:
            p.grad = None
        for x in leaves:
            x.grad = None
        forward(*leaves).backward(dy)
    return step


def has_compiled_formulas(case: LayerCase) -> bool:
    return case.spec["type"] in ("batchnorm", "layernorm")


def bench_layer(case: LayerCase, rounds: int, round_s: float, warmup_s: float, compile_sides: bool = True
                ) -> LayerResult:
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn((case.batch, *shape), generator=g) for shape in case.inputs]
    spec, index = _spec(case)
    dy = torch.randn((case.batch, *plan(spec, case.inputs[0]).layers[index].out_shape), generator=g)
    engine_step, model = _engine_fn(case, xs, dy, False)
    sides = {"engine": Side(engine_step, False), "torch": Side(_torch_fn(case, model, xs, dy), True)}
    if compile_sides and has_compiled_formulas(case) and engine_compiles():
        sides["engine+compile"] = Side(_engine_fn(case, xs, dy, True)[0], False)
    got = interleave(sides, rounds, round_s, warmup_s, torch.device("cpu"))
    us = {side: 1e6 / got.median(side) for side in sides}
    compiled = got.ratio("engine+compile", "torch") if "engine+compile" in sides else None
    shape = " + ".join(str((case.batch, *s)) for s in case.inputs)
    return LayerResult(case.name, shape, us, got.ratio("engine", "torch"), got.ratio_range("engine", "torch"),
                       compiled, got.rates)


def table(results: list[LayerResult]) -> str:
    head = (f"{'layer':<12} {'input':<32} {'engine us':>10} {'torch us':>10} {'eng/torch':>9} {'rounds':>13}"
            f" {'compiled':>9}")
    lines = [head, "-" * len(head)]
    for r in results:
        lo, hi = r.ratio_range
        compiled = f"{r.compiled_ratio:>8.2f}x" if r.compiled_ratio is not None else f"{'-':>9}"
        lines.append(f"{r.layer:<12} {r.shape:<32} {r.us['engine']:>10.1f} {r.us['torch']:>10.1f} "
                     f"{r.ratio:>8.2f}x {f'[{lo:.2f}-{hi:.2f}]':>13} {compiled}")
    lines.append("eng/torch: median over rounds of the engine's forward + backward rate over torch's (>1: the "
                 "engine is faster); [lowest-highest] round; compiled: the same with the engine's compile=True")
    return "\n".join(lines)
