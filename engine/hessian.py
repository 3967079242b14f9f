"""Curvature of the loss at a point: the Hessian's largest and smallest eigenvalues and its trace.

The engine has no autograd, so a Hessian-vector product is a centred difference of two of the
engine's own gradients, in float64 (an R-operator would need a second derivative per layer):

    H v ~ (g(theta + r v) - g(theta - r v)) / 2r          |v| = 1, r = 1e-6

exact up to rounding for a quadratic loss (linear regression). Where relu or max pool have a
kink within r of theta along v, the difference sees the jump in slope the kink makes; with r this
small that is rare.

Eigenvalues by power iteration on H v (PyHessian's method): the first run finds the eigenvalue of
largest magnitude; a run on the shifted H - lambda_1 I finds the other end of the spectrum. When
the first run does not converge (two ends of equal magnitude, +c and -c, make it oscillate), the
second run's end is used as the shift of a third, which finds the first end again. Each run stops
when ||H v - lambda v|| <= tol |lambda| (tol 1e-4) or after `iterations` products.

Trace by Hutchinson's estimator, mean of z^T H z over Rademacher z (exact for a diagonal H); when
the parameters are no more than the samples, exactly, as the sum of e_i^T H e_i.

Verdict: "minimum" when lambda_min >= -tolerance |lambda_max|, "maximum" when lambda_max <=
tolerance |lambda_min| (every direction curves down), else "saddle" (a clearly negative eigenvalue
beside a positive one): the seed's "full of saddle points", measured where training ended.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

HVP_STEP = 1e-6
POWER_TOLERANCE = 1e-4
Operator = Callable[[Tensor], Tensor]


@dataclass
class Eigen:
    value: float
    iterations: int
    residual: float          # ||H v - value v|| at the last iterate
    converged: bool


def hessian_vector_product(gradient: Callable[[Tensor], Tensor], theta: Tensor, v: Tensor,
                           r: float = HVP_STEP) -> Tensor:
    """H v at theta by the centred difference of gradients; gradient(point) -> flat gradient (a copy)."""
    return (gradient(theta + r * v) - gradient(theta - r * v)) / (2 * r)


def power_iteration(apply: Operator, start: Tensor, *, shift: float = 0.0, iterations: int = 100,
                    tolerance: float = POWER_TOLERANCE) -> Eigen:
    """The eigenvalue of largest magnitude of (H - shift I), returned as an eigenvalue of H."""
    v = start / torch.linalg.vector_norm(start)
    value, residual = 0.0, math.inf
    for k in range(1, iterations + 1):
        w = apply(v) - shift * v
        value = float(v @ w)
        residual = float(torch.linalg.vector_norm(w - value * v))
        if residual <= tolerance * abs(value):
            return Eigen(value + shift, k, residual, True)
        norm = torch.linalg.vector_norm(w)
        if float(norm) == 0.0:                       # v is in the null space: eigenvalue 0 of (H - shift I)
            return Eigen(shift, k, 0.0, True)
        v = w / norm
    return Eigen(value + shift, iterations, residual, False)


def extreme_eigenvalues(apply: Operator, n: int, *, iterations: int, generator: torch.Generator,
                        like: Tensor) -> tuple[Eigen, Eigen]:
    """(largest, smallest) eigenvalue of the symmetric operator, by (shifted) power iteration."""
    def start() -> Tensor:
        return torch.randn(n, generator=generator, dtype=torch.float64).to(like.device, like.dtype)
    first = power_iteration(apply, start(), iterations=iterations)
    other = power_iteration(apply, start(), shift=first.value, iterations=iterations)
    if not first.converged:
        first = power_iteration(apply, start(), shift=other.value, iterations=iterations)
    return (first, other) if first.value >= other.value else (other, first)


def trace(apply: Operator, n: int, *, samples: int, generator: torch.Generator, like: Tensor) -> dict[str, Any]:
    """Hutchinson's estimate of tr(H) with `samples` Rademacher vectors, or exact when n <= samples."""
    if n <= samples:
        total = 0.0
        for i in range(n):
            e = torch.zeros_like(like)
            e[i] = 1.0
            total += float(apply(e)[i])
        return {"trace": total, "trace_method": "exact", "trace_samples": n, "trace_stderr": 0.0}
    estimates = []
    for _ in range(samples):
        z = (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).to(like.device, like.dtype)
        estimates.append(float(z @ apply(z)))
    mean = sum(estimates) / samples
    spread = math.sqrt(sum((e - mean) ** 2 for e in estimates) / max(samples - 1, 1))
    return {"trace": mean, "trace_method": "hutchinson", "trace_samples": samples,
            "trace_stderr": spread / math.sqrt(samples)}


def verdict(largest: float, smallest: float, tolerance: float) -> str:
    if smallest >= -tolerance * abs(largest):
        return "minimum"
    if largest <= tolerance * abs(smallest):
        return "maximum"
    return "saddle"


def curvature(gradient: Callable[[Tensor], Tensor], theta: Tensor, *, iterations: int = 100,
              trace_samples: int = 20, tolerance: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """The Hessian report at theta (flat parameters, float64); gradient(point) -> flat gradient."""
    generator = torch.Generator().manual_seed(seed)
    products = 0

    def apply(v: Tensor) -> Tensor:
        nonlocal products
        products += 1
        return hessian_vector_product(gradient, theta, v)

    n = theta.numel()
    top, bottom = extreme_eigenvalues(apply, n, iterations=iterations, generator=generator, like=theta)
    scale = max(abs(top.value), abs(bottom.value)) or 1.0
    out: dict[str, Any] = {
        "max_eigenvalue": top.value, "min_eigenvalue": bottom.value,
        "verdict": verdict(top.value, bottom.value, tolerance), "tolerance": tolerance,
        "max_iterations": top.iterations, "min_iterations": bottom.iterations,
        "max_residual": top.residual / scale, "min_residual": bottom.residual / scale,
        "converged": top.converged and bottom.converged,
        "gradient_norm": float(torch.linalg.vector_norm(gradient(theta))), "parameters": n,
    }
    out.update(trace(apply, n, samples=trace_samples, generator=generator, like=theta))
    out["hessian_vector_products"] = products
    return out
