"""The Hessian's spectral density by stochastic Lanczos quadrature (Ghorbani et al. 2019), as PyHessian.

For each of `vectors` Rademacher vectors z, `steps` Lanczos steps from z / |z| with full
reorthogonalisation give a tridiagonal T = Q diag(nodes) Q^T. The nodes with weights Q[0, i]^2 are
a Gauss quadrature of the spectral measure seen from z, whose expectation over z is the histogram
of the n eigenvalues divided by n. The density is the average over vectors of each node smoothed by
a Gaussian; PyHessian's variance is 1e-5 x the range on 10,000 bins, ours a standard deviation of
SMOOTHING x the range, wide enough to read on POINTS points.

    negative_mass = mean over z of sum_i w_i [node_i < -flat]      the fraction of eigenvalues below
    mean          = mean over z of sum_i w_i node_i                 zero beyond `flat`; tr(H) / n

The masses come from the quadrature itself, not from the smoothed curve (smoothing moves mass
across zero). The Lanczos basis is kept for reorthogonalisation: steps x n float64.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import eigh_tridiagonal

from .curvature import NumpyOperator, Product

SMOOTHING = 0.01
POINTS = 201
BASIS_BYTES = 256 * 2**20       # steps are cut so that the basis stays within this


def lanczos(op: NumpyOperator, start: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta): the diagonal (m,) and off-diagonal (m - 1,) of T after m <= steps steps."""
    n = start.size
    basis = np.zeros((steps, n))                                               # (steps, n)
    basis[0] = start / np.linalg.norm(start)
    alpha, beta = [], []
    for j in range(steps):
        w = op(basis[j])
        alpha.append(float(w @ basis[j]))
        for _ in range(2):                                                     # full reorthogonalisation, twice
            w -= basis[:j + 1].T @ (basis[:j + 1] @ w)
        norm = float(np.linalg.norm(w))
        if j == steps - 1 or norm <= 1e-10 * max(abs(a) for a in alpha) or norm == 0.0:
            break                                                              # an invariant subspace: T is exact
        beta.append(norm)
        basis[j + 1] = w / norm
    return np.array(alpha), np.array(beta)


def quadrature(op: NumpyOperator, n: int, *, vectors: int, steps: int,
               rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(nodes, weights) per Rademacher vector; each weights sums to 1."""
    steps = max(1, min(steps, n, BASIS_BYTES // (8 * n)))
    out = []
    for _ in range(vectors):
        alpha, beta = lanczos(op, rng.choice([-1.0, 1.0], size=n), steps)
        nodes, Q = eigh_tridiagonal(alpha, beta) if beta.size else (alpha, np.ones((1, 1)))
        out.append((nodes, Q[0] ** 2))
    return out


def smoothed(runs: list[tuple[np.ndarray, np.ndarray]], points: int = POINTS) -> tuple[np.ndarray, np.ndarray, float]:
    """(grid, density, sigma): the runs' average of Gaussians at the nodes, integrating to 1 on the grid."""
    nodes = np.concatenate([n for n, _ in runs])
    low, high = float(nodes.min()), float(nodes.max())
    span = (high - low) or max(abs(high), 1.0)
    sigma = SMOOTHING * span
    grid = np.linspace(low - 4 * sigma, high + 4 * sigma, points)              # (points,)
    density = np.zeros(points)
    for nodes_z, weights_z in runs:
        gauss = np.exp(-0.5 * ((grid[:, None] - nodes_z[None, :]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        density += gauss @ weights_z / len(runs)                               # (points, m) @ (m,)
    return grid, density / np.trapezoid(density, grid), sigma


def spectral_density(hvp: Product, theta, *, vectors: int, steps: int, flat: float, seed: int = 0,
                     points: int = POINTS) -> dict:
    """The density as a series (eigenvalue, density) with its negative mass and mean; theta: flat float64."""
    n = theta.numel()
    op = NumpyOperator(hvp, theta, keep=0)
    runs = quadrature(op, n, vectors=vectors, steps=steps, rng=np.random.default_rng(seed))
    grid, density, sigma = smoothed(runs, points)
    return {
        "eigenvalues": grid.tolist(), "density": density.tolist(), "sigma": sigma, "flat": flat,
        "negative_mass": float(np.mean([w[nodes < -flat].sum() for nodes, w in runs])),
        "positive_mass": float(np.mean([w[nodes > flat].sum() for nodes, w in runs])),
        "mean": float(np.mean([w @ nodes for nodes, w in runs])),
        "vectors": vectors, "steps": int(max(len(nodes) for nodes, _ in runs)), "products": op.products,
    }
