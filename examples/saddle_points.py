"""The seed's claim that high-dimensional loss surfaces are "full of saddle points", measured with the
landscape's curvature report (core.hessian_report: Lanczos ends with error bounds, the spectral
density by stochastic Lanczos quadrature) on the engine's own gradients, in float64 on the CPU.

1. A deep linear network y = W3 W2 W1 x (and a 2-layer one) on a linear regression target: near zero,
   a known saddle; trained, no curvature left below zero (results in examples/README.md).
2. An MLP on digits (64-32-10, relu, Adam): the fraction of the Hessian's spectrum below zero at
   checkpoints across training.

    python examples/saddle_points.py        # a minute or two on a CPU
"""
from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from core.hessian_report import hessian_report
from engine import Model, fit, losses, optim
from engine.landscape import Objective

F64 = torch.float64
OPTIONS = {"iterations": 500,                 # hessian_max_iterations, the service's most
            "trace_samples": 10, "density_vectors": 3, "density_steps": 40}


def bounded(end: dict) -> str:
    """value ± bound, starred when its run did not converge."""
    return f"{end['value']:.3g} ± {end['bound']:.0e}" + ("" if end["converged"] else " *")


def row(label: str, h: dict) -> str:
    return (f"| {label} | {h['verdict']} | {bounded(h['largest'])} | {bounded(h['smallest'])} | "
            f"{100 * h['density']['negative_mass']:.1f} % | {h['gradient_norm']:.2g} | {h['hessian_vector_products']} |")


def curvature(model, loss, X, y) -> dict:
    return hessian_report(Objective(model, losses.make(loss), X, y).gradient, model.flat_params.clone(), **OPTIONS)


def deep_linear() -> None:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 8, generator=g, dtype=F64)
    Y = X @ torch.randn(8, 3, generator=g, dtype=F64) + 0.1 * torch.randn(256, 3, generator=g, dtype=F64)
    print("| network | verdict | largest | smallest | below zero | gradient norm | products |")
    print("|---|---|---|---|---|---|---|")
    for depth in (2, 3):
        spec = {"layers": [{"type": "linear", "out_features": 6, "bias": False} for _ in range(depth - 1)]
                + [{"type": "linear", "out_features": 3, "bias": False}]}
        model = Model.from_spec(spec, (8,), seed=0, dtype=F64)
        model.flat_params.mul_(1e-3)                                         # near zero
        print(row(f"{depth} linear layers, weights x 1e-3", curvature(model, "mse", X, Y)))
        for lr in (1e-2, 1e-3):                                              # full-batch Adam, 2000 steps
            fit(model, losses.make("mse"), optim.make({"type": "adam", "lr": lr}, model.parameters()), X, Y,
                {"epochs": 1000, "batch_size": 256, "validation_split": 0}, task="regression")
        print(row(f"{depth} linear layers, trained", curvature(model, "mse", X, Y)))


def digits_mlp() -> None:
    X, y = load_digits(return_X_y=True)
    X = torch.tensor((X - X.mean(0)) / (X.std(0) + 1e-8))
    y = torch.tensor(y)
    probe = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:512]   # the landscape's samples
    spec = {"layers": [{"type": "linear", "out_features": 32}, {"type": "relu"}, {"type": "linear", "out_features": 10}]}
    model = Model.from_spec(spec, (64,), seed=0, dtype=F64)
    adam = optim.make({"type": "adam", "lr": 1e-3}, model.parameters())
    print("| epochs trained | verdict | largest | smallest | below zero | gradient norm | products |")
    print("|---|---|---|---|---|---|---|")
    done = 0
    for epochs in (0, 1, 3, 10, 30):
        if epochs > done:
            fit(model, losses.make("cross_entropy"), adam, X, y,
                {"epochs": epochs - done, "batch_size": 64, "validation_split": 0}, task="classification")
            done = epochs
        h = curvature(model, "cross_entropy", X[probe], y[probe])
        print(row(str(epochs), h))
    print(f"\nafter {done} epochs: {h['verdict']}: {h['reason']}")


if __name__ == "__main__":
    torch.manual_seed(0)
    deep_linear()
    print("\n* the run did not converge (bound > 1e-6 x the largest |eigenvalue|)\n")
    digits_mlp()
