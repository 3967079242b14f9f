"""Lanczos (scipy's eigsh, core.curvature) against shifted power iteration (PyHessian's method, the
landscape's eigensolver before issue 21) for the Hessian's two extreme eigenvalues: products used
and error against the exact ends, on closed forms and on a trained wine MLP (exact by reading H whole).

    python bench/hessian_eigensolvers.py          # about a minute on one CPU core

Errors are |estimate - exact| / max |exact eigenvalue|. The power iteration below is the one that
engine/hessian.py had (stop when ||H v - lambda v|| <= 1e-4 |lambda|), kept here as the baseline.
"""
from __future__ import annotations

import math

import torch

from core.curvature import extreme_eigenvalues
from engine import Model, fit, losses, optim
from engine.hessian import HessianProducts
from engine.landscape import Objective

F64 = torch.float64


def power_iteration(apply, start, *, shift=0.0, iterations=100, tolerance=1e-4):
    """(eigenvalue of H, converged): the largest-magnitude eigenvalue of H - shift I."""
    v = start / torch.linalg.vector_norm(start)
    value = 0.0
    for _ in range(iterations):
        w = apply(v) - shift * v
        value = float(v @ w)
        if float(torch.linalg.vector_norm(w - value * v)) <= tolerance * abs(value):
            return value + shift, True
        v = w / torch.linalg.vector_norm(w)
    return value + shift, False


def power_ends(apply, n, iterations):
    """(largest, smallest, both converged) as engine/hessian.py found them: the dominant end, the other
    end by shifting by it, and the dominant end again from the other when the first run did not converge."""
    g = torch.Generator().manual_seed(0)
    first, ok1 = power_iteration(apply, torch.randn(n, generator=g, dtype=F64), iterations=iterations)
    other, ok2 = power_iteration(apply, torch.randn(n, generator=g, dtype=F64), shift=first, iterations=iterations)
    if not ok1:
        first, ok1 = power_iteration(apply, torch.randn(n, generator=g, dtype=F64), shift=other, iterations=iterations)
    return max(first, other), min(first, other), ok1 and ok2


def linear_regression():
    n, features, k = 300, 30, 2
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, features, generator=g, dtype=F64) * torch.linspace(0.3, 3.0, features, dtype=F64) + 0.3
    Y = torch.randn(n, k, generator=g, dtype=F64)
    model = Model.from_spec({"layers": [{"type": "linear", "out_features": k}]}, (features,), seed=0, dtype=F64)
    A = torch.cat([X, torch.ones(n, 1, dtype=F64)], dim=1)
    exact = torch.linalg.eigvalsh(2 / (n * k) * A.T @ A)
    return Objective(model, losses.make("mse"), X, Y).gradient, model.flat_params.clone(), exact


def indefinite_quadratic():
    n = 200
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    spectrum = torch.cat([torch.tensor([-0.7, -0.2], dtype=F64), torch.linspace(0.01, 4.0, n - 2, dtype=F64)])
    A = Q @ torch.diag(spectrum) @ Q.T
    return (lambda theta: A @ theta), torch.zeros(n, dtype=F64), spectrum


def linear_net_at_origin():
    d, hidden, k, n = 8, 6, 3, 200
    spec = {"layers": [{"type": "linear", "out_features": hidden, "bias": False},
                       {"type": "linear", "out_features": k, "bias": False}]}
    model = Model.from_spec(spec, (d,), dtype=F64)
    model.flat_params.zero_()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=F64)
    t = x @ torch.randn(d, k, generator=g, dtype=F64) + 0.1 * torch.randn(n, k, generator=g, dtype=F64)
    sigma = float(torch.linalg.svdvals(t.T @ x / (n * k)).max())
    return Objective(model, losses.make("mse"), x, t).gradient, model.flat_params.clone(), torch.tensor([-2 * sigma, 2 * sigma])


def wine_mlp():
    from sklearn.datasets import load_wine
    X, y = load_wine(return_X_y=True)
    X, y = torch.tensor((X - X.mean(0)) / X.std(0)), torch.tensor(y)
    spec = {"layers": [{"type": "linear", "out_features": 16}, {"type": "relu"}, {"type": "linear", "out_features": 3}]}
    model = Model.from_spec(spec, (13,), seed=0, dtype=F64)
    fit(model, losses.make("cross_entropy"), optim.make({"type": "adam", "lr": 0.01}, model.parameters()), X, y,
        {"epochs": 30, "batch_size": 16, "validation_split": 0}, task="classification")
    gradient, theta = Objective(model, losses.make("cross_entropy"), X, y).gradient, model.flat_params.clone()
    hvp = HessianProducts(gradient, theta)
    H = torch.stack([hvp(e) for e in torch.eye(theta.numel(), dtype=F64)], dim=1)
    return gradient, theta, torch.linalg.eigvalsh((H + H.T) / 2)


def main() -> None:
    print("| case | parameters | method | products | error λmax | error λmin | converged |")
    print("|---|---|---|---|---|---|---|")
    for name, make in (("linear regression", linear_regression), ("indefinite quadratic", indefinite_quadratic),
                       ("2-layer linear net at 0", linear_net_at_origin), ("wine MLP 13-16-3 relu", wine_mlp)):
        gradient, theta, exact = make()
        top, bottom, scale = float(exact.max()), float(exact.min()), float(exact.abs().max())
        for iterations in (100, 1000):
            hvp = HessianProducts(gradient, theta)
            high, low, ok = power_ends(hvp, theta.numel(), iterations)
            print(f"| {name} | {theta.numel()} | power, {iterations} iterations | {hvp.products} | "
                  f"{abs(high - top) / scale:.1e} | {abs(low - bottom) / scale:.1e} | {ok} |")
        for budget in (100, 300):
            hvp = HessianProducts(gradient, theta)
            largest, smallest, _ = extreme_eigenvalues(hvp, theta, budget=budget)
            print(f"| {name} | {theta.numel()} | Lanczos, budget {budget} | {hvp.products} | "
                  f"{abs(largest.value - top) / scale:.1e} | {abs(smallest.value - bottom) / scale:.1e} | "
                  f"{largest.converged and smallest.converged} |")
        assert math.isfinite(top)


if __name__ == "__main__":
    main()
