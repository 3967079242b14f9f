"""Whole networks trained 50 steps beside their torch.nn twin, in float64.

The engine side runs `TrainStep` (the exact per-step code `fit` runs); the twin is
chainrule.twin's torch.nn module loaded from the engine's state_dict (strict), trained with torch.optim
(foreach=False), torch.nn.functional losses and autograd on the same batches. Per-step
losses, final parameters and buffers (BatchNorm running stats) and eval-mode outputs must
agree to 1e-10 relative.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine import Model, TrainStep, losses, optim, schedules
from chainrule.twin import twin as engine_twin

RTOL = 1e-10


def torch_optimizer(spec: dict, params):
    kw = {k: v for k, v in spec.items() if k != "type"}
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop}[spec["type"]]
    return cls(params, foreach=False, **kw)


def torch_loss(spec: dict, pred, target):
    t = spec["type"]
    if t == "cross_entropy":
        return F.cross_entropy(pred, target, label_smoothing=spec.get("label_smoothing", 0.0))
    if t == "mse":
        return F.mse_loss(pred, target)
    if t == "huber":
        return F.huber_loss(pred, target, delta=spec.get("delta", 1.0))
    raise AssertionError(t)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    denom = torch.linalg.vector_norm(b).item()
    diff = torch.linalg.vector_norm(a - b).item()
    return diff / denom if denom > 0 else diff


def train_beside_twin(spec, input_shape, X, y, loss_spec, opt_spec, *, steps=50, batch_size=16,
                      grad_clip_norm=None, schedule=None):
    model = Model.from_spec(spec, input_shape, seed=3, dtype=torch.float64)
    twin = engine_twin(spec, input_shape, dtype=torch.float64)
    twin.load_state_dict(model.state_dict(), strict=True)
    twin.train()
    loss = losses.make(loss_spec)
    opt = optim.make(opt_spec, model.parameters())
    step = TrainStep(model, loss, opt, grad_clip_norm)
    topt = torch_optimizer(opt_spec, twin.parameters())
    sched = schedules.make(schedule or "constant", opt.lr, steps)
    g = torch.Generator().manual_seed(7)
    for k in range(steps):
        idx = torch.randperm(X.shape[0], generator=g)[:batch_size]
        xb, yb = X[idx], y[idx]
        lr = sched.lr_at(k)
        opt.lr = lr
        with torch.no_grad():
            ours = step(xb, yb).item()
        for group in topt.param_groups:
            group["lr"] = lr
        topt.zero_grad()
        theirs = torch_loss(loss_spec, twin(xb), yb)
        theirs.backward()
        if grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(twin.parameters(), grad_clip_norm, foreach=False)
        topt.step()
        assert abs(ours - theirs.item()) <= RTOL * abs(theirs.item()), f"step {k}: {ours} vs {theirs.item()}"
    ref = twin.state_dict()
    ours_sd = model.state_dict()
    assert list(ours_sd) == list(ref)
    for name, v in ours_sd.items():
        if v.is_floating_point():
            assert rel_err(v, ref[name]) <= RTOL, f"{name}: rel err {rel_err(v, ref[name]):.3g}"
        else:
            assert torch.equal(v, ref[name]), name
    twin.eval()
    with torch.no_grad():
        assert rel_err(model.predict(X), twin(X)) <= RTOL
    return model


def test_mlp_batchnorm_dropout0_adam_cross_entropy():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(128, 10, generator=g, dtype=torch.float64)
    y = (X[:, :3].argmax(dim=1)).long()
    spec = {"layers": [
        {"type": "linear", "out_features": 32, "bias": False},   # a bias before batchnorm has a zero
        {"type": "batchnorm"},                                       # gradient: Adam would scale noise
        {"type": "relu"},
        {"type": "dropout", "p": 0.0},
        {"type": "linear", "out_features": 16, "bias": False},
        {"type": "batchnorm", "momentum": 0.2},
        {"type": "relu"},
        {"type": "linear", "out_features": 3},
    ]}
    train_beside_twin(spec, (10,), X, y, {"type": "cross_entropy", "label_smoothing": 0.1},
                      {"type": "adam", "lr": 3e-3, "weight_decay": 1e-3},
                      schedule={"type": "cosine", "warmup_steps": 5})


def test_cnn_conv_pools_batchnorm2d_sgd_momentum_clipping():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(96, 2, 10, 10, generator=g, dtype=torch.float64)
    y = (X[:, 0, :5].mean(dim=(1, 2)) > X[:, 1, 5:].mean(dim=(1, 2))).long() + (X[:, 0, 0, 0] > 1).long()
    spec = {"layers": [
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False},
        {"type": "batchnorm"},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "conv2d", "out_channels": 6, "kernel_size": [3, 2], "stride": 1, "padding": [1, 0]},
        {"type": "relu"},
        {"type": "avgpool2d", "kernel_size": 2, "stride": 1},
        {"type": "flatten"},
        {"type": "linear", "out_features": 3},
    ]}
    train_beside_twin(spec, (2, 10, 10), X, y, {"type": "cross_entropy"},
                      {"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
                      grad_clip_norm=1.0)


def _regression_data(n_in: int, n_out: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(128, n_in, generator=g, dtype=torch.float64)
    W = torch.randn(n_in, n_out, generator=g, dtype=torch.float64)
    return X, torch.sin(X @ W) + 0.1 * X[:, :n_out] ** 2


def test_residual_dag_add_layernorm_adamw_mse():
    X, y = _regression_data(8, 2, 2)
    spec = {"layers": [
        {"type": "linear", "out_features": 16, "name": "stem"},
        {"type": "relu", "name": "act1"},
        {"type": "linear", "out_features": 16, "name": "fc"},
        {"type": "add", "name": "res", "inputs": ["stem", "fc"]},
        {"type": "layernorm", "name": "ln"},
        {"type": "relu", "name": "act2"},
        {"type": "linear", "out_features": 2, "name": "head"},
    ]}
    model = train_beside_twin(spec, (8,), X, y, {"type": "mse"},
                              {"type": "adamw", "lr": 1e-2, "weight_decay": 0.05})
    assert "stem.weight" in model.state_dict()


def test_concat_dag_adamw_mse():
    X, y = _regression_data(6, 1, 3)
    spec = {"layers": [
        {"type": "linear", "out_features": 8, "name": "a", "inputs": ["input"]},
        {"type": "tanh", "name": "a_act"},
        {"type": "linear", "out_features": 5, "name": "b", "inputs": ["input"]},
        {"type": "leaky_relu", "name": "b_act", "negative_slope": 0.1},
        {"type": "concat", "name": "cat", "inputs": ["a_act", "b_act", "input"]},
        {"type": "batchnorm", "name": "bn"},
        {"type": "linear", "out_features": 1, "name": "head"},
    ]}
    train_beside_twin(spec, (6,), X, y, {"type": "mse"}, {"type": "adamw", "lr": 5e-3, "amsgrad": True})


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
