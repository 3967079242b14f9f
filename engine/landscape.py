"""Loss landscapes of a trained network: "optimization is navigating a high-dimensional loss surface".

On a fixed subset of the training rows, in float64, in eval mode (dropout off, batchnorm's
running statistics), with the loss the network was trained with:

- line: the loss along the straight line theta(a) = theta_0 + a (theta_1 - theta_0) from the initial
  to the final weights (Goodfellow et al. 2015), a in [-0.5, 1.5]; a = 0 and a = 1 are exactly the
  initial and the final network. Batchnorm's running statistics go along too: means linearly,
  variances geometrically (v_0^(1-a) v_1^a stays positive past the ends);
- surface: the loss on a grid theta_1 + x d_1 + y d_2, x, y in [-span, span], around the final
  weights, along two random Gaussian directions normalised filter by filter (Li et al. 2018): each
  filter of d (a row of a linear weight, an output channel of a conv) gets the norm of the same
  filter of theta_1, so a step of 1 is the scale of the weights themselves whatever the layer;
  1-D tensors (biases, norm scales) get no direction, as in their code;
- hessian: what the `curvature` callable makes of the final weights, given the objective's gradient
  and the flat parameters (core.hessian_report: Lanczos on engine.hessian's products); none without.

    result = landscape(final_model, initial_state, loss, X, y, points=25, grid=21, curvature=report)

`tick()` is called after every loss or gradient evaluation (progress, cancellation: it may raise).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

Tick = Callable[[], None]
# (gradient(theta) -> flat gradient, theta) -> the Hessian's report
Curvature = Callable[[Callable[[Tensor], Tensor], Tensor], dict[str, Any]]


def _nothing() -> None:
    pass


class Objective:
    """The mean loss of `model` on (X, y) as a function of its flat parameters (model in float64)."""

    def __init__(self, model, loss, X: Tensor, y: Tensor, *, chunk: int = 256, tick: Tick = _nothing):
        self.model, self.loss, self.X, self.y, self.chunk, self.tick = model, loss, X, y, chunk, tick

    def _chunks(self):
        n = self.X.shape[0]
        for lo in range(0, n, self.chunk):
            yield self.X[lo:lo + self.chunk], self.y[lo:lo + self.chunk], min(self.chunk, n - lo) / n

    @torch.no_grad()
    def value(self, theta: Tensor) -> float:
        self.model.flat_params.copy_(theta)
        total = sum(float(self.loss.forward(self.model.forward(x, False), y)) * w for x, y, w in self._chunks())
        self.tick()
        return total

    @torch.no_grad()
    def gradient(self, theta: Tensor) -> Tensor:
        self.model.flat_params.copy_(theta)
        total = torch.zeros_like(theta)
        for x, y, w in self._chunks():
            self.loss.forward(self.model.forward(x, False, for_backward=True), y)
            self.model.backward(self.loss.backward(), need_input_grad=False)
            total += w * self.model.flat_grads
        self.tick()
        return total


def alphas(points: int) -> list[float]:
    """points values evenly spaced over [-0.5, 1.5], with 0 and 1 exact when they fall on the grid."""
    out = [-0.5 + 2.0 * i / (points - 1) for i in range(points)]
    return [float(round(a)) if abs(a - round(a)) < 1e-12 else a for a in out]


def _interpolated_buffers(start: dict[str, Tensor], end: dict[str, Tensor], a: float) -> dict[str, Tensor]:
    out = {}
    for name, b1 in end.items():
        b0 = start[name]
        if not b1.is_floating_point():
            out[name] = b1
        elif name.endswith("running_var"):
            out[name] = b0.clamp_min(1e-30) ** (1 - a) * b1.clamp_min(1e-30) ** a
        else:
            out[name] = b0 + a * (b1 - b0)
    return out


def line(objective: Objective, start: dict[str, Tensor], end: dict[str, Tensor], points: int) -> dict[str, Any]:
    """start, end: state dicts (parameters and buffers) of the initial and the final network."""
    model = objective.model
    names = list(model.parameters())
    theta0 = torch.cat([start[k].reshape(-1) for k in names]).to(model.flat_params)
    theta1 = torch.cat([end[k].reshape(-1) for k in names]).to(model.flat_params)
    buffers0 = {k: start[k].to(model.device) for k in model.buffers()}
    buffers1 = {k: end[k].to(model.device) for k in model.buffers()}
    losses = []
    for a in alphas(points):
        for name, b in _interpolated_buffers(buffers0, buffers1, a).items():
            model.buffers()[name].copy_(b)
        losses.append(objective.value(theta0 + a * (theta1 - theta0)))
    for name, b in buffers1.items():
        model.buffers()[name].copy_(b)
    return {"alphas": alphas(points), "losses": losses}


def filter_normalized_direction(model, generator: torch.Generator) -> Tensor:
    """A random direction in the layout of model.flat_params, normalised filter by filter (Li et al.)."""
    flat = model.flat_params
    direction = torch.zeros_like(flat)
    base = flat.storage_offset()
    for p in model.parameters().values():
        if p.dim() <= 1:
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(flat)   # (filters, ...)
        d_rows, p_rows = d.reshape(d.shape[0], -1), p.reshape(p.shape[0], -1)
        d_rows *= (torch.linalg.vector_norm(p_rows, dim=1) / torch.linalg.vector_norm(d_rows, dim=1)
                   .clamp_min(1e-30)).unsqueeze(1)
        start = p.storage_offset() - base
        direction[start:start + p.numel()] = d_rows.reshape(-1)
    return direction


def surface(objective: Objective, center: Tensor, d1: Tensor, d2: Tensor, points: int,
            span: float = 1.0) -> dict[str, Any]:
    """losses[j][i] = L(center + xs[i] d1 + ys[j] d2)."""
    coords = [-span + 2 * span * i / (points - 1) for i in range(points)]
    coords = [0.0 if abs(c) < 1e-12 else c for c in coords]
    grid = [[objective.value(center + x * d1 + y * d2) for x in coords] for y in coords]
    return {"xs": coords, "ys": list(coords), "losses": grid}


def landscape(model, initial_state: dict[str, Tensor] | None, loss, X: Tensor, y: Tensor, *,
              points: int = 25, grid: int = 21, span: float = 1.0, seed: int = 0,
              curvature: Curvature | None = None, tick: Tick = _nothing) -> dict[str, Any]:
    """The line (None without initial_state), the surface and the hessian of the module docstring.

    model: the final network in float64 (its weights are restored at the end); X, y: the subset,
    on the model's device, y as `loss` takes it."""
    final = model.state_dict()
    objective = Objective(model, loss, X, y, tick=tick)
    theta = model.flat_params.clone()
    try:
        out: dict[str, Any] = {"samples": int(X.shape[0]), "parameters": model.n_parameters}
        out["line"] = None if initial_state is None else line(objective, initial_state, final, points)
        generator = torch.Generator().manual_seed(seed)
        d1 = filter_normalized_direction(model, generator)
        d2 = filter_normalized_direction(model, generator)
        out["surface"] = {**surface(objective, theta, d1, d2, grid, span), "loss_at_center": objective.value(theta)}
        out["hessian"] = None if curvature is None else curvature(objective.gradient, theta)
        return out
    finally:
        model.load_state_dict(final, strict=True)


def evaluations(points: int, grid: int, products: int) -> int:
    """An upper bound of the loss / gradient evaluations `landscape` makes with at most `products`
    Hessian-vector products (for progress)."""
    return points + grid * grid + 1 + 2 * products + 1
