"""The Hessian's extreme eigenvalues, each with an error bound, by Lanczos (scipy's eigsh).

The operator is the engine's Hessian-vector product (engine.hessian.HessianProducts: a
centred difference of two of the engine's gradients, float64), wrapped as a scipy LinearOperator.
This lives in core/ rather than engine/ because engine/ imports only torch.

Each end of the spectrum is one eigsh run (k=1, which="LA": on H, then on lambda_max I - H for the
smallest), started from a seeded vector. Whatever the run returns, its value is the Rayleigh
quotient theta = v^T H v of a unit vector v, and its bound the residual of one more product:

    |lambda - theta| <= ||H v - theta v||      for some eigenvalue lambda of a symmetric H

so the bound holds whether or not the run converged. A run converges when that residual is within
CONVERGED_RTOL of the spectrum's scale (the larger |theta| of the two ends); ARPACK's own test is
relative to |theta|, which a near-zero end could never meet: hence the shift. A run that exhausts
its product budget without an eigenvector left in ARPACK's hands is finished by a Rayleigh-Ritz
step on the vectors it multiplied (all of them, up to RITZ_BYTES: the Krylov space it explored; no
further products but the residual's).

A network of at most DENSE_MAX parameters is read whole: n products give H column by column, and
numpy's eigh of its symmetric part gives every eigenvalue (the `dense` method).
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, LinearOperator, eigsh
from torch import Tensor

DENSE_MAX = 32
CONVERGED_RTOL = 1e-6
ARPACK_TOL = 1e-8
KRYLOV = 20                     # eigsh's ncv: Lanczos vectors kept between restarts
RITZ_BYTES = 256 * 2**20        # the products kept for the Rayleigh-Ritz step of an unconverged run
Product = Callable[[Tensor], Tensor]


@dataclass
class Eigen:
    value: float                # theta, the Rayleigh quotient of the returned vector
    bound: float                # ||H v - theta v||: an eigenvalue lies in [value - bound, value + bound]
    converged: bool             # bound <= CONVERGED_RTOL x the spectrum's scale
    products: int               # Hessian-vector products this end used, the residual's included

    def as_dict(self) -> dict:
        return asdict(self)


class NonFinite(ArithmeticError):
    """A Hessian-vector product was not finite: the loss overflows near these weights."""


class NumpyOperator:
    """The Hessian product on float64 numpy vectors, counting products and keeping the last `keep`."""

    def __init__(self, hvp: Product, like: Tensor, keep: int = KRYLOV):
        self.hvp, self.like, self.products = hvp, like, 0
        self.recent: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=keep)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float64).reshape(-1)                           # (n,), a copy: ARPACK reuses its buffer
        self.products += 1
        hx = self.hvp(torch.from_numpy(x).to(self.like)).detach().cpu().numpy().astype(np.float64)
        if not np.isfinite(hx).all():
            raise NonFinite("a Hessian-vector product was not finite: the loss or its gradient overflows within "
                            "1e-6 of these weights")
        self.recent.append((x, hx))
        return hx


def rayleigh_ritz(pairs: list[tuple[np.ndarray, np.ndarray]], largest: bool) -> np.ndarray:
    """The extreme Ritz vector of H on the span of the vectors x of (x, H x), without new products."""
    X = np.stack([x for x, _ in pairs], axis=1)                                # (n, m)
    HX = np.stack([hx for _, hx in pairs], axis=1)                             # (n, m)
    U, S, Vt = np.linalg.svd(X, full_matrices=False)                           # X = U S Vt
    keep = S > 1e-10 * S[0]
    Q, HQ = U[:, keep], HX @ Vt[keep].T / S[keep]                              # H U = H X Vt^T S^-1
    T = Q.T @ HQ                                                               # (m', m')
    _, vectors = np.linalg.eigh((T + T.T) / 2)
    return Q @ vectors[:, -1 if largest else 0]


def _bounded(op: NumpyOperator, v: np.ndarray) -> tuple[float, float]:
    """(theta, ||H v - theta v||) for the unit vector along v, by one product."""
    v = v / np.linalg.norm(v)
    hv = op(v)
    theta = float(v @ hv)
    return theta, float(np.linalg.norm(hv - theta * v))


def lanczos_end(hvp: Product, like: Tensor, n: int, *, budget: int, rng: np.random.Generator,
                shift: float | None = None) -> tuple[float, float, int]:
    """(theta, bound, products) for one end by eigsh, within about `budget` products: the largest
    eigenvalue of H, or with `shift` (the largest) the smallest, as the largest of shift I - H, so that
    ARPACK's test, relative to the eigenvalue it converges to, is relative to the spectrum's width."""
    op = NumpyOperator(hvp, like, keep=max(KRYLOV, min(budget + KRYLOV, RITZ_BYTES // (16 * n))))
    matvec = op if shift is None else (lambda x: shift * np.asarray(x).reshape(-1) - op(x))
    ncv = min(n, KRYLOV)
    restarts = max(1, (budget - ncv) // max(ncv // 2, 1) + 1)        # ARPACK: ncv, then about ncv / 2 per restart
    start = rng.standard_normal(n)
    try:
        _, vectors = eigsh(LinearOperator((n, n), matvec=matvec, dtype=np.float64), k=1, which="LA", ncv=ncv,
                           maxiter=restarts, tol=ARPACK_TOL, v0=start)
        v = vectors[:, 0]
    except ArpackError as stopped:        # out of budget, or H v0 = 0 (a zero Hessian: "starting vector is zero")
        found = getattr(stopped, "eigenvectors", None)
        v = (found[:, 0] if found is not None and found.size
             else rayleigh_ritz(list(op.recent), largest=shift is None) if op.recent else start)
    theta, bound = _bounded(op, v)
    return theta, bound, op.products


def dense_ends(hvp: Product, like: Tensor, n: int) -> tuple[tuple[float, float], tuple[float, float], int]:
    """((largest, bound), (smallest, bound), n): H read column by column, eigh of its symmetric part."""
    op = NumpyOperator(hvp, like, keep=0)
    H = np.stack([op(np.eye(n)[:, i]) for i in range(n)], axis=1)              # (n, n), column i = H e_i
    values, vectors = np.linalg.eigh((H + H.T) / 2)
    ends = []
    for i in (-1, 0):
        v = vectors[:, i]
        ends.append((float(values[i]), float(np.linalg.norm(H @ v - values[i] * v))))
    return ends[0], ends[1], op.products


def extreme_eigenvalues(hvp: Product, theta: Tensor, *, budget: int, seed: int = 0) -> tuple[Eigen, Eigen, str]:
    """(largest, smallest, method) of the Hessian at theta; budget: products allowed per end."""
    n = theta.numel()
    if n <= DENSE_MAX:
        (top, top_bound), (bottom, bottom_bound), products = dense_ends(hvp, theta, n)
        scale = max(abs(top), abs(bottom))
        return (Eigen(top, top_bound, top_bound <= CONVERGED_RTOL * scale or top_bound == 0.0, products),
                Eigen(bottom, bottom_bound, bottom_bound <= CONVERGED_RTOL * scale or bottom_bound == 0.0, 0),
                "dense")
    rng = np.random.default_rng(seed)
    top = lanczos_end(hvp, theta, n, budget=budget, rng=rng)
    ends = [top, lanczos_end(hvp, theta, n, budget=budget, rng=rng, shift=top[0] + top[1])]
    scale = max(abs(ends[0][0]), abs(ends[1][0]))
    largest, smallest = (Eigen(value, bound, bound <= CONVERGED_RTOL * scale or bound == 0.0, products)
                         for value, bound, products in ends)
    return largest, smallest, "lanczos"

