"""core.curvature, core.spectral_density and core.curvature_verdict in float64, against closed forms
and autograd's full Hessian: Lanczos's ends within 1e-6, each value's bound holding, a saddle called
a saddle, a convex loss never one, the density's mean and negative mass against the exact histogram,
and a verdict that says inconclusive where the bound or the run cannot decide."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from chainrule.twin import twin
from core.curvature import Eigen
from core.curvature_verdict import verdict
from core.hessian_report import hessian_report
from engine import Model, fit, losses, optim
from engine.landscape import Objective

F64 = torch.float64


def report(model, loss, X, y, **options):
    options = {"iterations": 300, "trace_samples": 10, "density_vectors": 0, **options}
    return hessian_report(Objective(model, losses.make(loss), X, y).gradient, model.flat_params.clone(), **options)


def contains_exact(end: dict, exact: float) -> bool:
    """The exact eigenvalue is within the reported bound (plus float64 rounding of H v)."""
    return abs(end["value"] - exact) <= end["bound"] + 1e-9 * max(abs(exact), 1.0)


def test_linear_regression_both_ends_match_2_over_n_AtA_within_1e_6():
    n, features, outputs = 300, 30, 2                     # 62 parameters: Lanczos, not the dense path
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, features, generator=g, dtype=F64) * torch.linspace(0.3, 3.0, features, dtype=F64) + 0.3
    Y = torch.randn(n, outputs, generator=g, dtype=F64)
    model = Model.from_spec({"layers": [{"type": "linear", "out_features": outputs}]}, (features,), seed=0, dtype=F64)
    # MSE = 1/(n k) sum (W x + b - y)^2: per output, H = 2/(n k) A^T A with A = [X 1]
    A = torch.cat([X, torch.ones(n, 1, dtype=F64)], dim=1)
    exact = torch.linalg.eigvalsh(2 / (n * outputs) * A.T @ A)
    h = report(model, "mse", X, Y)
    assert h["method"] == "lanczos" and h["converged"]
    assert h["max_eigenvalue"] == pytest.approx(float(exact.max()), rel=1e-6)
    assert h["min_eigenvalue"] == pytest.approx(float(exact.min()), rel=1e-6)
    assert contains_exact(h["largest"], float(exact.max())) and contains_exact(h["smallest"], float(exact.min()))
    assert h["verdict"] == "minimum" and "curves up in every direction" in h["reason"]
    assert h["hessian_vector_products"] == h["largest"]["products"] + h["smallest"]["products"] + 10


def test_a_quadratic_with_an_indefinite_spectrum_is_a_saddle_with_its_eigenvalues():
    n = 80
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    spectrum = torch.cat([torch.tensor([-0.7, -0.2], dtype=F64), torch.linspace(0.01, 4.0, n - 2, dtype=F64)])
    A = Q @ torch.diag(spectrum) @ Q.T                    # L(theta) = theta^T A theta / 2, gradient A theta
    h = hessian_report(lambda theta: A @ theta, torch.zeros(n, dtype=F64), density_vectors=4, density_steps=40)
    assert h["verdict"] == "saddle" and h["converged"]
    assert h["max_eigenvalue"] == pytest.approx(4.0, rel=1e-8) and h["min_eigenvalue"] == pytest.approx(-0.7, rel=1e-8)
    assert h["reason"].startswith("the smallest eigenvalue is -0.7 ± ")
    assert h["density"]["negative_mass"] == pytest.approx(2 / n, abs=0.02)    # 2 of 80 below zero


def test_softmax_regression_is_never_a_saddle_or_a_maximum_while_it_trains():
    g = torch.Generator().manual_seed(0)
    centres = 2 * torch.randn(3, 20, generator=g, dtype=F64)
    y = torch.randint(0, 3, (150,), generator=g)
    X = centres[y] + torch.randn(150, 20, generator=g, dtype=F64)
    model = Model.from_spec({"layers": [{"type": "linear", "out_features": 3}]}, (20,), seed=0, dtype=F64)
    adam = optim.make({"type": "adam", "lr": 0.05}, model.parameters())
    verdicts = []
    for _ in range(3):                                    # the start, then after 2 and 4 epochs
        h = report(model, "cross_entropy", X, y, iterations=100, density_vectors=2, density_steps=20)
        assert h["min_eigenvalue"] > -h["flat"] and h["density"]["negative_mass"] == 0.0
        verdicts.append(h["verdict"])
        fit(model, losses.make("cross_entropy"), adam, X, y, {"epochs": 2, "batch_size": 30, "validation_split": 0},
            task="classification")
    assert set(verdicts) <= {"minimum", "inconclusive"} and "minimum" in verdicts


def test_a_two_layer_linear_net_at_the_origin_is_a_saddle_with_eigenvalues_plus_minus_2_sigma():
    # y = W2 W1 x, MSE over k outputs, at W1 = W2 = 0: gradient 0; for each hidden unit the Hessian block
    # on (W2[:, j], W1[j, :]) is [[0, -2C], [-2C^T, 0]] with C = E[t x^T] / k: eigenvalues +-2 sigma_i(C)
    d, hidden, k, n = 8, 6, 3, 200
    spec = {"layers": [{"type": "linear", "out_features": hidden, "bias": False},
                       {"type": "linear", "out_features": k, "bias": False}]}
    model = Model.from_spec(spec, (d,), dtype=F64)
    model.flat_params.zero_()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=F64)
    t = x @ torch.randn(d, k, generator=g, dtype=F64) + 0.1 * torch.randn(n, k, generator=g, dtype=F64)
    sigma = float(torch.linalg.svdvals(t.T @ x / (n * k)).max())
    h = report(model, "mse", x, t)
    assert h["method"] == "lanczos" and h["gradient_norm"] == 0.0 and h["verdict"] == "saddle"
    assert h["max_eigenvalue"] == pytest.approx(2 * sigma, rel=1e-6)
    assert h["min_eigenvalue"] == pytest.approx(-2 * sigma, rel=1e-6)


def exact_hessian(spec, shape, state, X, y) -> torch.Tensor:
    """The full Hessian of the twin's cross-entropy by autograd (tests only), in the engine's parameter order."""
    net = twin(spec, shape, dtype=F64)
    net.load_state_dict(state)
    params = list(net.parameters())
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(F.cross_entropy(net(X), y), params,
                                                                   create_graph=True)])
    rows = [torch.cat([r.reshape(-1) for r in torch.autograd.grad(grad[i], params, retain_graph=True)])
            for i in range(grad.numel())]
    return torch.stack(rows)                              # (n, n)


@pytest.mark.parametrize("epochs", [0, 15])
def test_the_density_matches_the_exact_eigenvalue_histogram_in_mean_and_negative_mass(epochs):
    spec = {"layers": [{"type": "linear", "out_features": 12}, {"type": "tanh"}, {"type": "linear", "out_features": 3}]}
    g = torch.Generator().manual_seed(0)
    centres = 2 * torch.randn(3, 6, generator=g, dtype=F64)
    y = torch.randint(0, 3, (120,), generator=g)
    X = centres[y] + torch.randn(120, 6, generator=g, dtype=F64)
    model = Model.from_spec(spec, (6,), seed=0, dtype=F64)                 # 123 parameters
    if epochs:
        fit(model, losses.make("cross_entropy"), optim.make({"type": "adam", "lr": 0.05}, model.parameters()), X, y,
            {"epochs": epochs, "batch_size": 16, "validation_split": 0}, task="classification")
    exact = torch.linalg.eigvalsh(exact_hessian(spec, (6,), model.state_dict(), X, y))
    h = report(model, "cross_entropy", X, y, density_vectors=8, density_steps=40)
    density, scale = h["density"], float(exact.abs().max())
    assert h["max_eigenvalue"] == pytest.approx(float(exact.max()), rel=1e-6)
    assert h["min_eigenvalue"] == pytest.approx(float(exact.min()), rel=1e-6, abs=1e-9 * scale)
    # stated tolerances: the mean within 2% of the spectral radius, the negative mass within 0.05
    assert abs(density["mean"] - float(exact.mean())) <= 0.02 * scale
    assert abs(density["negative_mass"] - float((exact < -density["flat"]).double().mean())) <= 0.05
    grid, values = torch.tensor(density["eigenvalues"], dtype=F64), torch.tensor(density["density"], dtype=F64)
    assert float(torch.trapezoid(values, grid)) == pytest.approx(1.0, abs=1e-9)
    assert grid[0] < float(exact.min()) and grid[-1] > float(exact.max())


# ----------------------------------------------------------------------------- the verdict in words
def test_the_wine_case_reads_as_what_it_is():
    """The issue's case: -3.4e-4 beside 0.214, the smallest run unconverged with a bound twice its size."""
    name, reason = verdict(Eigen(0.214, 1e-9, True, 20), Eigen(-3.4e-4, 7e-4, False, 100), 1e-3)
    assert name == "inconclusive"
    assert reason.startswith("the smallest eigenvalue is -0.00034 ± 0.0007 (its run did not converge in 100 "
                             "products): flat along some direction as far as it went; not a saddle by this measure")


def test_a_bound_that_straddles_zero_gives_no_sign_even_when_converged():
    name, reason = verdict(Eigen(1.0, 1e-9, True, 20), Eigen(-0.01, 0.02, True, 60), 1e-3)
    assert name == "inconclusive" and "its bound does not exclude zero" in reason


def test_an_unconverged_negative_end_decides_only_with_the_density():
    top, bottom = Eigen(1.0, 1e-9, True, 20), Eigen(-0.05, 1e-3, False, 100)
    assert verdict(top, bottom, 1e-3)[0] == "inconclusive"
    assert "cannot establish alone" in verdict(top, bottom, 1e-3)[1]
    assert verdict(top, bottom, 1e-3, {"negative_mass": 0.0, "positive_mass": 0.9})[0] == "inconclusive"
    assert verdict(top, bottom, 1e-3, {"negative_mass": 0.1, "positive_mass": 0.9})[0] == "saddle"


@pytest.mark.parametrize("largest, smallest, expected", [
    ((2.0, 0.0), (0.5, 0.0), "minimum"), ((2.0, 0.0), (-1e-4, 1e-12), "minimum"),
    ((2.0, 0.0), (-0.5, 0.0), "saddle"), ((-0.1, 0.0), (-2.0, 0.0), "maximum"),
    ((0.0, 0.0), (0.0, 0.0), "inconclusive")])
def test_converged_ends_decide_by_sign_beyond_the_tolerance(largest, smallest, expected):
    name, _ = verdict(Eigen(*largest, True, 20), Eigen(*smallest, True, 20), 1e-3)
    assert name == expected


def test_an_unconverged_smallest_end_never_shows_a_minimum():
    top, bottom = Eigen(1.0, 1e-9, True, 20), Eigen(0.3, 0.2, False, 200)
    name, reason = verdict(top, bottom, 1e-3, {"negative_mass": 0.0, "positive_mass": 1.0})
    assert name == "inconclusive" and "nor a minimum" in reason


def test_an_unconverged_run_is_finished_by_rayleigh_ritz_on_what_it_explored():
    """A budget too small for ARPACK still returns the best vector of the space it explored, with a
    bound that holds: here the smallest end of a clustered spectrum."""
    from core.curvature import extreme_eigenvalues
    n = 300
    spectrum = torch.cat([torch.tensor([-0.01], dtype=F64), torch.linspace(0.0, 1.0, n - 1, dtype=F64) ** 3])
    _, smallest, _ = extreme_eigenvalues(lambda v: spectrum * v, torch.zeros(n, dtype=F64), budget=40)
    assert not smallest.converged and abs(smallest.value - (-0.01)) <= smallest.bound
    assert smallest.value < 0.01                          # near the bottom, not a random Ritz value


def test_a_zero_hessian_is_flat_and_an_overflowing_one_is_said_so():
    """A zero Hessian (a 3-layer linear net at exactly zero) gives ARPACK a zero start; a NaN product
    (a loss that overflows) gives no numbers, and a report that says why rather than a 500."""
    theta = torch.zeros(50, dtype=F64)
    h = hessian_report(lambda t: 0 * t, theta, density_vectors=2, density_steps=10)
    assert h["verdict"] == "inconclusive" and h["max_eigenvalue"] == h["min_eigenvalue"] == 0.0
    assert "no curvature beyond the tolerance" in h["reason"] and h["density"]["negative_mass"] == 0.0
    h = hessian_report(lambda t: t * float("nan"), theta)
    assert h["verdict"] == "inconclusive" and h["largest"] is None and "not finite" in h["reason"]
