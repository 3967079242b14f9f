"""The Hessian report of a landscape: extreme eigenvalues with bounds, density, verdict, trace.

    report = hessian_report(objective.gradient, theta, iterations=200, density_vectors=3)

The mathematics is core.curvature (eigenvalues), core.spectral_density and core.curvature_verdict;
the products and the trace are engine.hessian's.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from engine.hessian import HessianProducts, trace

from .curvature import DENSE_MAX, KRYLOV, NonFinite, extreme_eigenvalues
from .curvature_verdict import verdict
from .spectral_density import spectral_density


def hessian_report(gradient: Callable[[Tensor], Tensor], theta: Tensor, *, iterations: int = 200,
                   trace_samples: int = 20, tolerance: float = 1e-3, density_vectors: int = 3,
                   density_steps: int = 40, seed: int = 0) -> dict:
    """The Hessian report at theta (flat parameters, float64); gradient(point) -> flat gradient.

    iterations: products allowed per end of the spectrum; density_vectors x density_steps products
    for the density (none when density_vectors is 0)."""
    hvp = HessianProducts(gradient, theta)
    try:
        largest, smallest, method = extreme_eigenvalues(hvp, theta, budget=iterations, seed=seed)
        flat = tolerance * max(abs(largest.value), abs(smallest.value))
        density = (spectral_density(hvp, theta, vectors=density_vectors, steps=density_steps, flat=flat, seed=seed)
                   if density_vectors else None)
    except NonFinite as error:
        return not_finite(str(error), theta, tolerance, hvp.products)
    name, reason = verdict(largest, smallest, tolerance, density)
    out = {
        "verdict": name, "reason": reason, "method": method, "tolerance": tolerance, "flat": flat,
        "max_eigenvalue": largest.value, "min_eigenvalue": smallest.value,
        "largest": largest.as_dict(), "smallest": smallest.as_dict(),
        "converged": largest.converged and smallest.converged,
        "gradient_norm": float(torch.linalg.vector_norm(gradient(theta))), "parameters": theta.numel(),
        "density": density,
    }
    out.update(trace(hvp, theta.numel(), samples=trace_samples, generator=torch.Generator().manual_seed(seed),
                     like=theta))
    out["hessian_vector_products"] = hvp.products
    return out


def products_bound(n: int, *, iterations: int, trace_samples: int, density_vectors: int, density_steps: int) -> int:
    """At most the Hessian-vector products `hessian_report` makes (for progress)."""
    ends = n if n <= DENSE_MAX else 2 * (iterations + KRYLOV + 1)
    return ends + density_vectors * min(density_steps, n) + min(trace_samples, n)


def not_finite(reason: str, theta: Tensor, tolerance: float, products: int) -> dict:
    """The report when the products overflow: no eigenvalue, no density, no trace; inconclusive."""
    return {"verdict": "inconclusive", "reason": reason, "method": None, "tolerance": tolerance, "flat": None,
            "max_eigenvalue": None, "min_eigenvalue": None, "largest": None, "smallest": None, "converged": False,
            "gradient_norm": None, "parameters": theta.numel(), "density": None, "trace": None,
            "trace_method": "hutchinson", "trace_samples": 0, "trace_stderr": None, "hessian_vector_products": products}
