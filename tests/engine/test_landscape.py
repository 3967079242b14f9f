"""engine.landscape and engine.hessian: the line's ends are the initial and final networks; Hutchinson's
trace; a small MLP's largest eigenvalue is autograd's; directions are normalised filter by filter.
The eigenvalues' closed forms, bounds, density and verdict: tests/engine/test_curvature.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from chainrule.twin import twin
from engine import Model, fit, losses, optim
from core.hessian_report import hessian_report
from engine.hessian import hessian_vector_product, trace
from engine.landscape import Objective, alphas, filter_normalized_direction, landscape

F64 = torch.float64


def blobs(n=120, d=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(classes, d, generator=g, dtype=F64)
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g, dtype=F64), y


def test_the_line_runs_from_the_initial_to_the_final_network_batchnorm_included():
    spec = {"layers": [{"type": "linear", "out_features": 16}, {"type": "batchnorm"}, {"type": "relu"},
                       {"type": "dropout", "p": 0.2}, {"type": "linear", "out_features": 3}]}
    X, y = blobs()
    model = Model.from_spec(spec, (4,), seed=0, dtype=F64)
    initial = model.state_dict()
    fit(model, losses.make("cross_entropy"), optim.make({"type": "adam", "lr": 0.05}, model.parameters()), X, y,
        {"epochs": 5, "batch_size": 16}, task="classification")
    final = model.state_dict()
    assert not torch.equal(initial["1.running_var"], final["1.running_var"])

    def loss_of(state) -> float:
        fresh = Model.from_spec(spec, (4,), dtype=F64)
        fresh.load_state_dict(state)
        return float(losses.make("cross_entropy").forward(fresh.predict(X), y))

    result = landscape(model, initial, losses.make("cross_entropy"), X, y, points=25, grid=21,
                       curvature=lambda gradient, theta: hessian_report(gradient, theta, iterations=40, trace_samples=5,
                                                                        density_vectors=1, density_steps=10))
    line = result["line"]
    assert len(line["alphas"]) == 25 and line["alphas"][0] == -0.5 and line["alphas"][-1] == 1.5
    assert line["losses"][line["alphas"].index(0.0)] == pytest.approx(loss_of(initial), rel=1e-12)
    assert line["losses"][line["alphas"].index(1.0)] == pytest.approx(loss_of(final), rel=1e-12)
    surface = result["surface"]
    assert len(surface["losses"]) == 21 and all(len(row) == 21 for row in surface["losses"])
    assert surface["losses"][10][10] == surface["loss_at_center"] == pytest.approx(loss_of(final), rel=1e-12)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in final.items())     # left as it was
    assert result["hessian"]["parameters"] == model.n_parameters and result["hessian"]["density"]["vectors"] == 1


def test_alphas_hit_0_and_1_exactly():
    assert alphas(25)[6] == 0.0 and alphas(25)[18] == 1.0
    assert 0.0 in alphas(101) and 1.0 in alphas(101)


def linear_regression(n=200, features=5, outputs=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=F64)[:features]
    X = torch.randn(n, features, generator=g, dtype=F64) * scales + 0.3
    Y = torch.randn(n, outputs, generator=g, dtype=F64)
    model = Model.from_spec({"layers": [{"type": "linear", "out_features": outputs}]}, (features,), seed=seed,
                            dtype=F64)
    # MSE = 1/(n k) sum (W x + b - y)^2: per output, the Hessian in (w_j, b_j) is 2/(n k) [X 1]^T [X 1]
    X1 = torch.cat([X, torch.ones(n, 1, dtype=F64)], dim=1)
    block = 2 / (n * outputs) * X1.T @ X1
    return model, X, Y, block, outputs


def test_hutchinson_estimates_the_trace_within_its_standard_error():
    model, X, Y, block, k = linear_regression()
    objective = Objective(model, losses.make("mse"), X, Y)
    theta = model.flat_params.clone()
    est = trace(lambda v: hessian_vector_product(objective.gradient, theta, v), theta.numel(), samples=10,
                generator=torch.Generator().manual_seed(0), like=theta)
    exact = k * float(block.trace())
    assert est["trace_method"] == "hutchinson" and est["trace_stderr"] > 0
    assert abs(est["trace"] - exact) < 4 * est["trace_stderr"]


def test_a_small_mlp_largest_eigenvalue_matches_autograd_power_iteration():
    spec = {"layers": [{"type": "linear", "out_features": 8}, {"type": "tanh"}, {"type": "linear", "out_features": 3}]}
    X, y = blobs(n=60)
    model = Model.from_spec(spec, (4,), seed=0, dtype=F64)
    fit(model, losses.make("cross_entropy"), optim.make({"type": "adam", "lr": 0.05}, model.parameters()), X, y,
        {"epochs": 20, "batch_size": 16, "validation_split": 0}, task="classification")
    ours = hessian_report(Objective(model, losses.make("cross_entropy"), X, y).gradient, model.flat_params.clone(),
                          iterations=300, trace_samples=5, density_vectors=0)

    net = twin(spec, (4,), dtype=F64)
    net.load_state_dict(model.state_dict())
    params = list(net.parameters())
    grads = torch.autograd.grad(F.cross_entropy(net(X), y), params, create_graph=True)
    v = [torch.randn_like(p) for p in params]
    value = 0.0
    for _ in range(2000):                                  # power iteration on autograd's H v
        norm = torch.sqrt(sum((u * u).sum() for u in v))
        v = [u / norm for u in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        value, previous = float(sum((a * b).sum() for a, b in zip(v, hv))), value
        v = [h.detach() for h in hv]
        if abs(value - previous) < 1e-12 * abs(value):
            break
    assert value > 0 and ours["max_eigenvalue"] == pytest.approx(value, rel=1e-5)


def test_directions_are_normalised_filter_by_filter_and_skip_biases():
    spec = {"layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "batchnorm"},
                       {"type": "relu"}, {"type": "flatten"}, {"type": "linear", "out_features": 3}]}
    model = Model.from_spec(spec, (2, 5, 5), seed=0, dtype=F64)
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    params = model.parameters()
    offset = 0
    for name, p in params.items():
        piece = d[offset:offset + p.numel()].reshape(p.shape)
        offset += p.numel()
        if p.dim() == 1:
            assert not piece.any(), name
        else:
            torch.testing.assert_close(piece.reshape(p.shape[0], -1).norm(dim=1), p.reshape(p.shape[0], -1).norm(dim=1))
