"""Curvature of the loss at a point: Hessian-vector products and the Hessian's trace.

The engine has no autograd, so a Hessian-vector product is a centred difference of two of the
engine's own gradients, in float64 (an R-operator would need a second derivative per layer):

    H v ~ (g(theta + r v) - g(theta - r v)) / 2r          |v| = 1, r = 1e-6

exact up to rounding for a quadratic loss (linear regression). Where relu or max pool have a
kink within r of theta along v, the difference sees the jump in slope the kink makes; with r this
small that is rare.

The eigenvalues, their bounds, the spectral density and the verdict are core.curvature's (scipy's
Lanczos on these products); engine/ imports only torch.

Trace by Hutchinson's estimator, mean of z^T H z over Rademacher z (exact for a diagonal H); when
the parameters are no more than the samples, exactly, as the sum of e_i^T H e_i.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

HVP_STEP = 1e-6
Operator = Callable[[Tensor], Tensor]


def hessian_vector_product(gradient: Callable[[Tensor], Tensor], theta: Tensor, v: Tensor,
                           r: float = HVP_STEP) -> Tensor:
    """H v at theta by the centred difference of gradients; gradient(point) -> flat gradient (a copy)."""
    scale = float(torch.linalg.vector_norm(v))
    if scale == 0.0:
        return torch.zeros_like(theta)
    u = v / scale                                            # the step is r along a unit vector
    return (gradient(theta + r * u) - gradient(theta - r * u)) / (2 * r) * scale


class HessianProducts:
    """v -> H v at theta (flat float64 parameters), counting the products made (two gradients each)."""

    def __init__(self, gradient: Callable[[Tensor], Tensor], theta: Tensor, r: float = HVP_STEP):
        self.gradient, self.theta, self.r, self.products = gradient, theta, r, 0

    def __call__(self, v: Tensor) -> Tensor:
        self.products += 1
        return hessian_vector_product(self.gradient, self.theta, v, self.r)


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
