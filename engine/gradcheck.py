"""gradcheck: "backprop is just the chain rule", verified on the user's own network.

The engine's backward (every layer's hand-written formula, chained by the Model) against centred
finite differences of the loss, in float64, for each parameter tensor and for the input:

    numeric_i = (L(theta + h e_i) - L(theta - h e_i)) / 2h          h = eps (1e-5)

h = 1e-5 balances the difference's truncation error (h^2 f^(3) / 6) against float64 rounding of
the two losses (about 1e-16 |L| / h): correct backwards come out near 1e-8. Every coordinate of a
tensor up to `coordinates` of them, else a seeded random subset of that many. A coordinate's
relative error is |analytic - numeric| / max(|analytic|, |numeric|, 1e-3 x the largest gradient
checked), so a gradient a thousand times smaller than the network's largest is judged at that
scale rather than against its own rounding noise; it passes within `tolerance` (1e-6) plus what
float64 rounding of the two losses can explain. A layer passes when every coordinate does.

A kink (relu or leaky_relu at 0, max pool ties, l1 / huber at their corners) between theta - h
and theta + h breaks the finite difference, not the backward. It shows as one-sided slopes that
disagree: for a kink crossed at distance d < h the centred estimate is off by (h - d) / 2h x the
jump in slope and the one-sided slopes by twice that, where a smooth function's differ by only
about 2h |f''|. A failing coordinate whose one-sided slopes disagree by as much as its error, or by
more than 1% (a relu at exactly 0, where the engine's derivative is neither slope), is reported as
a kink, not a failure.

An embedding's padding row is left out: torch.nn.Embedding defines its gradient as zero although
the row is read, so finite differences would disagree by definition (the report's `of` counts the
coordinates that are checkable).

The model runs in training mode (dropout draws the same masks for every evaluation; batchnorm
uses batch statistics) and is left as it was found: parameters, buffers and generator.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .model import Model

ROUNDING = 8 * torch.finfo(torch.float64).eps       # rounding of a loss, relative, with slack for its sums
SMALL_GRADIENT = 1e-3                              # judged at this fraction of the largest gradient
KINK = 1e-2                                        # one-sided slopes this far apart: a corner


class GradcheckTimeout(RuntimeError):
    """The check would take, or took, longer than its time limit."""


@dataclass
class _Coordinate:
    index: int
    analytic: float
    numeric: float
    rounding: float          # what float64 rounding of the losses can explain of |analytic - numeric|
    one_sided_gap: float     # |slope right - slope left|
    slope: float             # max(|slope right|, |slope left|)

    @property
    def at_kink(self) -> bool:
        """The slopes on either side disagree by as much as the error, or by a corner's worth (1%):
        over 2h a smooth function's slopes differ by about 2h |f''|, orders of magnitude less."""
        return self.one_sided_gap >= abs(self.analytic - self.numeric) or self.one_sided_gap > KINK * self.slope


@dataclass
class _Target:
    name: str                # "0.weight", or "input"
    layer: str | None        # layer key, None for the input
    kind: str | None
    values: Tensor           # the tensor perturbed in place
    analytic: Tensor         # the engine's gradient, same shape
    coords: list[_Coordinate]
    frozen: tuple[int, int] = (0, 0)   # [start, stop) of flat indices whose gradient is 0 by definition

    @property
    def checkable(self) -> int:
        return self.values.numel() - (self.frozen[1] - self.frozen[0])

    def choose(self, coordinates: int, generator: torch.Generator) -> list[int]:
        """Up to `coordinates` flat indices outside `frozen`: all of them, or a seeded subset."""
        lo, hi = self.frozen
        return [i if i < lo else i + hi - lo for i in _choose(self.checkable, coordinates, generator)]


def _float64(model):
    if model.dtype == torch.float64:
        return model
    copy = Model.from_spec(model.spec, model.input_shape, dtype=torch.float64, device=model.device)
    copy.load_state_dict(model.state_dict(), strict=True)
    copy.generator.set_state(model.generator.get_state())
    return copy


def _choose(n: int, coordinates: int, generator: torch.Generator) -> list[int]:
    if n <= coordinates:
        return list(range(n))
    return sorted(torch.randperm(n, generator=generator)[:coordinates].tolist())


class _Check:
    """One network, one batch: the loss at any point, the engine's gradients at the start."""

    def __init__(self, model, loss, x: Tensor, y: Tensor):
        self.model, self.loss, self.x, self.y = model, loss, x, y
        self.generator_state = model.generator.get_state()

    def value(self) -> float:
        self.model.generator.set_state(self.generator_state)     # the same dropout masks every time
        return float(self.loss.forward(self.model.forward(self.x, True, for_backward=False), self.y))

    def gradients(self) -> tuple[float, Tensor]:
        self.model.generator.set_state(self.generator_state)
        value = float(self.loss.forward(self.model.forward(self.x, True), self.y))
        dx = self.model.backward(self.loss.backward(), need_input_grad=True)
        return value, dx

    def coordinate(self, target: _Target, i: int, at: float, eps: float) -> _Coordinate:
        flat = target.values.view(-1)
        original = float(flat[i])
        flat[i] = original + eps
        up, h_up = self.value(), float(flat[i]) - original          # the step as stored
        flat[i] = original - eps
        down, h_down = self.value(), original - float(flat[i])
        flat[i] = original
        numeric = (up - down) / (h_up + h_down)
        rounding = ROUNDING * (abs(up) + abs(down)) / (h_up + h_down)
        right, left = (up - at) / h_up, (at - down) / h_down
        return _Coordinate(i, float(target.analytic.view(-1)[i]), numeric, rounding, abs(right - left),
                           max(abs(right), abs(left)))


def _frozen(layer) -> tuple[int, int]:
    """An embedding's padding row, as flat indices of its table; (0, 0) elsewhere."""
    pad = getattr(layer.spec, "padding_idx", None)
    if layer.spec.type != "embedding" or pad is None:
        return (0, 0)
    width = layer.spec.embedding_dim
    return (pad * width, (pad + 1) * width)


def _targets(model, x: Tensor, dx: Tensor, check_input: bool) -> list[_Target]:
    grads = model.grads()
    out = []
    for key, layer in model.layer_items():
        for name, p in layer.params.items():
            if f"{key}.{name}" in grads:        # a tied weight is checked once, as its embedding's table
                out.append(_Target(f"{key}.{name}", key, layer.spec.type, p, grads[f"{key}.{name}"].clone(), [],
                                   _frozen(layer)))
    if check_input and model.input_dtype.is_floating_point:   # token ids have no gradient
        out.append(_Target("input", None, None, x, dx.clone(), []))
    return out


@torch.no_grad()
def gradcheck(model, loss, x: Tensor, y: Tensor, *, tolerance: float = 1e-6, eps: float = 1e-5,
              coordinates: int = 32, seed: int = 0, check_input: bool = True,
              time_limit_s: float | None = None) -> dict[str, Any]:
    """The report of module docstring's check: per layer (and the input) the max relative error, the
    worst coordinate, and passed / failed / kink. x: (N, *input_shape); y: targets as `loss` takes them.
    A float32 model is checked through a float64 copy. Raises GradcheckTimeout past time_limit_s."""
    started = time.monotonic()
    model64 = _float64(model)
    buffers = {k: v.clone() for k, v in model64.buffers().items()}
    x = x.to(model64.device, model64.input_dtype).clone()
    y = y.to(model64.device, torch.float64 if y.is_floating_point() else y.dtype)
    check = _Check(model64, loss, x, y)
    try:
        value, dx = check.gradients()
        targets = _targets(model64, x, dx, check_input)
        generator = torch.Generator().manual_seed(seed)
        plan = [(t, i) for t in targets for i in t.choose(coordinates, generator)]
        _within_time(check, len(plan), started, time_limit_s)
        for n, (target, i) in enumerate(plan):
            if time_limit_s is not None and time.monotonic() - started > time_limit_s:
                raise GradcheckTimeout(f"the gradient check took longer than {time_limit_s:g} s: {n} of "
                                       f"{len(plan)} coordinates checked")
            target.coords.append(check.coordinate(target, i, value, eps))
    finally:
        for k, v in model64.buffers().items():
            v.copy_(buffers[k])
        model64.generator.set_state(check.generator_state)
    return _report(targets, value, x.shape[0], tolerance, eps, time.monotonic() - started)


def _within_time(check: _Check, n_coords: int, started: float, limit: float | None) -> None:
    """Time one evaluation and refuse a check whose 2 evaluations per coordinate would not fit."""
    if limit is None:
        return
    t0 = time.monotonic()
    check.value()
    need = (time.monotonic() - t0) * 2 * n_coords + (t0 - started)
    if need > limit:
        raise GradcheckTimeout(f"the gradient check would take about {need:.1f} s ({n_coords} coordinates, 2 "
                               f"forward passes each), over the limit of {limit:g} s: use a smaller batch_size, "
                               "fewer coordinates or a smaller network")


def _report(targets: list[_Target], value: float, batch: int, tolerance: float, eps: float,
            seconds: float) -> dict[str, Any]:
    scale = max((max(abs(c.analytic), abs(c.numeric)) for t in targets for c in t.coords), default=0.0)
    floor = max(SMALL_GRADIENT * scale, 1e-300)
    tensors = [_tensor_entry(t, floor, tolerance) for t in targets]
    layers: dict[str, dict[str, Any]] = {}
    for t, entry in zip(targets, tensors):
        if t.layer is not None:
            layers.setdefault(t.layer, {"key": t.layer, "type": t.kind, "tensors": []})["tensors"].append(entry)
    layer_list = [_summarize(layer) for layer in layers.values()]
    input_entry = next((e for t, e in zip(targets, tensors) if t.layer is None), None)
    everything = layer_list + ([input_entry] if input_entry else [])
    return {"passed": all(e["status"] != "failed" for e in everything), "tolerance": tolerance, "eps": eps,
            "dtype": "float64", "loss": value, "batch_size": batch,
            "coordinates_checked": sum(len(t.coords) for t in targets), "time_s": round(seconds, 4),
            "layers": layer_list, "input": input_entry}


def _tensor_entry(t: _Target, floor: float, tolerance: float) -> dict[str, Any]:
    worst, worst_err, kinks, failed = None, 0.0, 0, False
    for c in t.coords:
        scale = max(abs(c.analytic), abs(c.numeric), floor)
        err, allowed = abs(c.analytic - c.numeric) / scale, tolerance + c.rounding / scale
        if err > allowed and c.at_kink:
            kinks += 1
            continue
        failed |= err > allowed
        if worst is None or err > worst_err:
            worst, worst_err = c, err
    shape = list(t.values.shape)
    where = None if worst is None else {
        "index": list(torch.unravel_index(torch.tensor(worst.index), t.values.shape)) if shape else [],
        "analytic": worst.analytic, "numeric": worst.numeric, "relative_error": worst_err}
    if where is not None:
        where["index"] = [int(i) for i in where["index"]]
    status = "failed" if failed else ("kink" if kinks else "passed")
    return {"name": t.name, "shape": shape, "checked": len(t.coords), "of": t.checkable, "status": status,
            "max_relative_error": worst_err, "kinks": kinks, "worst": where}


def _summarize(layer: dict[str, Any]) -> dict[str, Any]:
    entries = layer["tensors"]
    worst = max(entries, key=lambda e: e["max_relative_error"])
    status = "failed" if any(e["status"] == "failed" for e in entries) else \
        "kink" if any(e["status"] == "kink" for e in entries) else "passed"
    return {**layer, "status": status, "max_relative_error": worst["max_relative_error"],
            "kinks": sum(e["kinks"] for e in entries),
            "worst": None if worst["worst"] is None else {"tensor": worst["name"], **worst["worst"]}}

