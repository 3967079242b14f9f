"""Real learning through `fit`: the engine must actually train networks to good accuracy.

Data: sklearn's load_digits and load_diabetes ship inside the scikit-learn package (no
download); the smooth nonlinear regression data is generated here from a fixed seed.
float32, few epochs: each test takes well under 10 s on 2 cores.
"""
from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits

from engine import Model, fit, losses, optim


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are small: intra-op threads buy nothing and, on a busy 2-core CI box,
    oversubscription made a 0.4 s test take 20 s. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def train(spec, input_shape, X, y, *, task, loss, opt, config, seed=0):
    model = Model.from_spec(spec, input_shape, seed=seed, dtype=torch.float32)
    result = fit(model, losses.make(loss), optim.make(opt, model.parameters()), X, y, config, task=task)
    assert result.status in ("completed", "early_stopped")
    return model, result


@pytest.fixture(scope="module")
def digits():
    d = load_digits()                                   # 1797 8x8 images, bundled with scikit-learn
    return torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target, dtype=torch.int64)


def test_digits_mlp_reaches_95_percent(digits):
    X, y = digits
    spec = {"layers": [{"type": "linear", "out_features": 128}, {"type": "relu"},
                       {"type": "linear", "out_features": 10}]}
    _, r = train(spec, (64,), X, y, task="classification", loss="cross_entropy",
                 opt={"type": "adam", "lr": 3e-3},
                 config={"epochs": 20, "batch_size": 32, "validation_split": 0.2, "seed": 0})
    assert r.history[-1]["val_accuracy"] >= 0.95, r.history[-1]
    assert r.history[-1]["train_accuracy"] >= 0.97


def test_digits_cnn_reaches_95_percent(digits):
    X, y = digits
    spec = {"layers": [
        {"type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "linear", "out_features": 10},
    ]}
    _, r = train(spec, (1, 8, 8), X.reshape(-1, 1, 8, 8), y, task="classification", loss="cross_entropy",
                 opt={"type": "adam", "lr": 3e-3},
                 config={"epochs": 8, "batch_size": 64, "validation_split": 0.2, "seed": 0})
    assert r.history[-1]["val_accuracy"] >= 0.95, r.history[-1]


def test_smooth_nonlinear_regression_reaches_r2_095():
    g = torch.Generator().manual_seed(0)                # generated: y = sin(2 x0) + x1^2 / 2 + x0 x2
    X = torch.rand(3000, 3, generator=g) * 4 - 2
    y = torch.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2 + X[:, 0] * X[:, 2]
    spec = {"layers": [{"type": "linear", "out_features": 64}, {"type": "tanh"},
                       {"type": "linear", "out_features": 64}, {"type": "tanh"},
                       {"type": "linear", "out_features": 1}]}
    model, r = train(spec, (3,), X, y, task="regression", loss="mse", opt={"type": "adam", "lr": 3e-3},
                     config={"epochs": 30, "batch_size": 64, "validation_split": 0.2, "seed": 0,
                             "schedule": {"type": "cosine", "warmup_steps": 20}})
    h = r.history[-1]
    assert h["val_r2"] >= 0.95 and h["train_r2"] >= 0.95, h
    assert model.predict(X[:5]).shape == (5, 1)


@pytest.mark.parametrize("spec", [
    {"layers": [{"type": "linear", "out_features": 1}]},
    {"layers": [{"type": "linear", "out_features": 16}, {"type": "relu"}, {"type": "dropout", "p": 0.2},
                {"type": "linear", "out_features": 1}]},
], ids=["linear", "mlp"])
def test_diabetes_reaches_val_r2_04(spec):
    d = load_diabetes()                                 # 442 patients, bundled with scikit-learn
    X = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.float32)
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    _, r = train(spec, (10,), X, y, task="regression", loss="mse", opt={"type": "adam", "lr": 0.02},
                 config={"epochs": 60, "batch_size": 32, "validation_split": 0.2, "seed": 0,
                         "early_stopping": {"monitor": "val_loss", "patience": 15, "restore_best": True}})
    best = r.history[r.best_epoch - 1]
    assert best["val_r2"] >= 0.4, best
