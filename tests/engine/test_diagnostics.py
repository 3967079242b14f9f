"""engine.diagnostics through fit: each rule fires on a network built to show it and stays silent on
healthy ones; the init report measures "initialization preserves variance across layers"; stop_on
ends a run; findings survive a resume unchanged; the activation statistics are the right numbers."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError
from sklearn.datasets import load_diabetes, load_digits, load_iris

from engine import Callbacks, DiagnosisStop, Model, NonFiniteError, fit, losses, optim
from engine import checkpoint as ckpt_io
from engine.diagnostics import ActivationStats, init_report, saturated_fraction
from engine.spec import TrainConfig


class Collector(Callbacks):
    def __init__(self):
        self.findings, self.init, self.checkpoints = [], None, []

    def on_findings(self, findings):
        self.findings += findings

    def on_init_report(self, report):
        self.init = report

    def on_checkpoint(self, checkpoint):
        self.checkpoints.append(checkpoint)


def standardized(X) -> torch.Tensor:
    X = torch.tensor(X, dtype=torch.float32)
    return (X - X.mean(0)) / (X.std(0) + 1e-6)


DIGITS = load_digits()
X_DIGITS, Y_DIGITS = standardized(DIGITS.data), torch.tensor(DIGITS.target)
IRIS = load_iris()
X_IRIS, Y_IRIS = torch.tensor(IRIS.data, dtype=torch.float32), torch.tensor(IRIS.target)   # raw, unscaled


def mlp(kind: str, hidden: int, width: int = 64, out: int = 10, **linear) -> dict:
    layers = []
    for _ in range(hidden):
        layers += [{"type": "linear", "out_features": width, **linear}, {"type": kind}]
    return {"layers": layers + [{"type": "linear", "out_features": out}]}


def gaussian_weights(std: float):
    def scale(model):
        g = torch.Generator().manual_seed(0)
        for name, p in model.parameters().items():
            if name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * std)
    return scale


def train(spec, X, y, opt, *, loss="cross_entropy", task="classification", prepare=None, dtype=torch.float32,
          **config):
    model = Model.from_spec(spec, tuple(X.shape[1:]), seed=0, dtype=dtype)
    if prepare is not None:
        prepare(model)
    cb = Collector()
    result = fit(model, losses.make(loss), optim.make(opt, model.parameters()), X, y,
                 {"validation_split": 0.2, **config}, task=task, callbacks=cb)
    return result, cb


def codes(cb: Collector) -> set[str]:
    return {f["code"] for f in cb.findings}


# ----------------------------------------------------------------------------- healthy runs
@pytest.mark.parametrize("case", ["digits mlp adam", "digits mlp sgd momentum", "diabetes regression"])
def test_a_healthy_network_on_real_data_gives_no_finding(case):
    if case == "diabetes regression":
        d = load_diabetes()
        y = torch.tensor(d.target, dtype=torch.float32)
        result, cb = train(mlp("relu", 1, 32, out=1), standardized(d.data), (y - y.mean()) / y.std(),
                           {"type": "adam", "lr": 1e-3}, loss="mse", task="regression", epochs=30)
    else:
        opt = {"type": "adam", "lr": 1e-3} if "adam" in case else {"type": "sgd", "lr": 0.05, "momentum": 0.9}
        result, cb = train(mlp("relu", 2), X_DIGITS, Y_DIGITS, opt, epochs=12)
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]     # it did learn
    assert cb.findings == [] and cb.init["findings"] == []
    assert all(h["findings"] == [] for h in result.history)


# ----------------------------------------------------------------------------- each rule fires
def test_vanishing_gradient_in_a_deep_sigmoid_mlp_with_small_gaussian_init():
    result, cb = train(mlp("sigmoid", 10), X_DIGITS, Y_DIGITS, {"type": "sgd", "lr": 0.1},
                       prepare=gaussian_weights(0.05), epochs=3)
    vanishing = [f for f in cb.findings if f["code"] == "vanishing_gradient"]
    first = next(f for f in vanishing if f["layer"]["key"] == "0")
    assert first["severity"] == "warning" and first["epoch"] == 2          # held for 2 epochs in a row
    layers = result.history[1]["layers"]
    assert layers["0"]["grad_norm"] < 1e-3 * layers["20"]["grad_norm"]     # the measured numbers agree
    assert "vanishes" in first["message"] and "sigmoid" in first["hint"]


def test_a_huge_lr_kills_relus_and_diverges_and_stop_on_ends_the_run():
    """SGD with lr 100: the loss goes from about 1 to hundreds and more, without becoming NaN."""
    result, cb = train(mlp("relu", 1, 8, out=3), X_IRIS, Y_IRIS, {"type": "sgd", "lr": 100.0}, epochs=5,
                       batch_size=4)
    divergence = next(f for f in cb.findings if f["code"] == "divergence")
    assert divergence["severity"] == "error" and divergence["epoch"] == 1 and divergence["layer"] is None
    assert divergence["value"] > 10 and divergence["threshold"] == 10.0
    assert result.history[0]["train_loss"] > 100 * cb.init["loss"]
    assert {"dead_relu", "update_ratio"} <= codes(cb)
    assert result.status == "completed"             # without stop_on it only says so

    cb = Collector()
    model = Model.from_spec(mlp("relu", 1, 8, out=3), (4,), seed=0)
    with pytest.raises(DiagnosisStop) as stop:
        fit(model, losses.make("cross_entropy"), optim.make({"type": "sgd", "lr": 100.0}, model.parameters()),
            X_IRIS, Y_IRIS, {"validation_split": 0.2, "epochs": 5, "batch_size": 4,
                             "diagnostics": {"stop_on": ["divergence"]}}, task="classification", callbacks=cb)
    assert stop.value.code == "divergence" and str(stop.value) == divergence["message"]
    assert max(f["epoch"] for f in cb.findings) == 1                      # stopped at the epoch it was found


def test_poor_initialization_with_std_1_on_wide_layers_and_not_with_he():
    _, cb = train(mlp("relu", 2, 512), X_DIGITS, Y_DIGITS, {"type": "adam", "lr": 1e-3},
                  prepare=gaussian_weights(1.0), epochs=1)
    (poor,) = [f for f in cb.findings if f["code"] == "poor_initialization"]
    assert poor["epoch"] == 0 and poor["step"] == 0 and poor["layer"] == {"key": "2", "type": "linear"}
    assert poor["value"] == pytest.approx(cb.init["depth"]["activation_std_ratio"]) and poor["value"] > 10
    assert cb.init["findings"] == [poor]
    _, he = train(mlp("relu", 2, 512), X_DIGITS, Y_DIGITS, {"type": "adam", "lr": 1e-3}, epochs=1)
    assert "poor_initialization" not in codes(he) and 0.5 < he.init["depth"]["activation_std_ratio"] < 2


def test_zero_weights_are_a_poor_initialization():
    _, cb = train(mlp("relu", 3, init="zeros"), X_DIGITS, Y_DIGITS, {"type": "adam", "lr": 1e-3}, epochs=1)
    (poor,) = [f for f in cb.findings if f["code"] == "poor_initialization"]
    assert poor["value"] == 0.0 and "constant" in poor["message"]


def test_saturated_tanh_with_large_weights():
    _, cb = train(mlp("tanh", 2, 256), X_DIGITS, Y_DIGITS, {"type": "adam", "lr": 1e-3},
                  prepare=gaussian_weights(1.0), epochs=1)
    saturated = [f for f in cb.findings if f["code"] == "saturated_activation"]
    assert {f["layer"]["key"] for f in saturated} == {"1", "3"} and all(f["value"] > 0.5 for f in saturated)


def test_exploding_gradient_in_a_deep_relu_net_with_std_1_init():
    result, cb = train(mlp("relu", 6, 64), X_DIGITS, Y_DIGITS, {"type": "sgd", "lr": 1e-12},
                       prepare=gaussian_weights(1.0), dtype=torch.float64, epochs=1)
    exploding = [f for f in cb.findings if f["code"] == "exploding_gradient"]
    assert exploding and all(f["value"] > 1e4 and f["severity"] == "error" for f in exploding)
    assert result.history[0]["layers"]["0"]["grad_norm"] > 1e4


def test_a_tiny_lr_stalls_updates_and_the_loss():
    result, cb = train(mlp("relu", 1), X_DIGITS, Y_DIGITS, {"type": "sgd", "lr": 1e-7}, epochs=7)
    (flat,) = [f for f in cb.findings if f["code"] == "loss_not_decreasing"]
    assert flat["epoch"] == 6 and flat["value"] < 1e-3                   # patience 5, after epoch 1's best
    stalled = [f for f in cb.findings if f["code"] == "update_ratio"]
    assert stalled and all(f["value"] < 1e-6 and f["epoch"] == 1 for f in stalled)


def test_overfitting_a_small_noisy_set():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(60, 20, generator=g), torch.randint(0, 2, (60,), generator=g)
    result, cb = train(mlp("relu", 2, 256, out=2), X, y, {"type": "adam", "lr": 1e-3}, epochs=25, batch_size=16,
                       validation_split=0.5)
    (over,) = [f for f in cb.findings if f["code"] == "overfitting"][:1]
    then = result.history[over["epoch"] - 1]
    best_val = min(h["val_loss"] for h in result.history[:over["epoch"]])
    assert then["val_loss"] > 1.1 * best_val and over["value"] == pytest.approx(then["val_loss"] / best_val - 1)


def test_a_nan_loss_is_a_non_finite_finding_before_the_error():
    cb = Collector()
    model = Model.from_spec(mlp("relu", 2), (64,), seed=0)
    with pytest.raises(NonFiniteError) as error:
        fit(model, losses.make("cross_entropy"), optim.make({"type": "sgd", "lr": 1.0}, model.parameters()),
            X_DIGITS * 1e30, Y_DIGITS, {"epochs": 2}, task="classification", callbacks=cb)
    (nan,) = [f for f in cb.findings if f["code"] == "non_finite"]
    assert nan["severity"] == "error" and nan["message"] == str(error.value) and nan["step"] == error.value.step


# ----------------------------------------------------------------------------- options
def test_thresholds_and_switches_are_the_jobs():
    spec, data = mlp("relu", 1, 8, out=3), (X_IRIS, Y_IRIS)
    _, cb = train(spec, *data, {"type": "sgd", "lr": 100.0}, epochs=3, batch_size=4,
                  diagnostics={"rules": {"dead_relu": {"threshold": 1.0}, "update_ratio": {"enabled": False}}})
    assert not codes(cb) & {"dead_relu", "update_ratio"} and "divergence" in codes(cb)
    _, off = train(spec, *data, {"type": "sgd", "lr": 100.0}, epochs=3, batch_size=4,
                   diagnostics={"enabled": False})
    assert off.findings == [] and off.init is None


def test_the_package_imports_on_its_own():
    """engine.train imports engine.diagnostics: the package must not need engine.train first."""
    for module in ("engine.diagnostics", "engine.gradcheck", "engine.landscape"):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


def test_unknown_rules_are_refused_naming_the_valid_ones():
    for bad in ({"rules": {"dead_neurons": {}}}, {"stop_on": ["dead_neurons"]}):
        with pytest.raises(ValidationError, match="unknown rule 'dead_neurons'.*valid rules: vanishing_gradient, "
                                                  "exploding_gradient, dead_relu"):
            TrainConfig.model_validate({"diagnostics": bad})
    with pytest.raises(ValidationError, match="disables those rules"):
        TrainConfig.model_validate({"diagnostics": {"rules": {"divergence": {"enabled": False}},
                                                    "stop_on": ["divergence"]}})


def test_a_lasting_condition_is_one_finding_and_a_resumed_run_finds_the_same(tmp_path):
    spec = mlp("relu", 1, 8, out=3)
    full, cb = train(spec, X_IRIS, Y_IRIS, {"type": "sgd", "lr": 100.0}, epochs=6, batch_size=4)
    seen = {}
    for f in cb.findings:
        key = (f["code"], (f["layer"] or {}).get("key"), f["threshold"])
        assert seen.get(key) != f["epoch"] - 1, f"{key} reported at epochs {seen[key]} and {f['epoch']}"
        seen[key] = f["epoch"]
    path = tmp_path / "ckpt.safetensors"
    ckpt_io.save(path, cb.checkpoints[2])                                  # after epoch 3
    resumed_cb = Collector()
    model = Model.from_spec(spec, (4,), seed=5)
    resumed = fit(model, losses.make("cross_entropy"), optim.make({"type": "sgd", "lr": 100.0}, model.parameters()),
                  X_IRIS, Y_IRIS, {"validation_split": 0.2, "epochs": 6, "batch_size": 4}, task="classification",
                  callbacks=resumed_cb, resume=ckpt_io.load(path))
    assert [h["findings"] for h in resumed.history] == [h["findings"] for h in full.history]
    assert resumed_cb.findings == [f for f in cb.findings if f["epoch"] > 3] and resumed_cb.init is None


def test_diagnostics_do_not_change_what_is_trained():
    """The init report's batchnorm statistics and dropout draws are put back: on and off train alike."""
    spec = {"layers": [{"type": "linear", "out_features": 32}, {"type": "batchnorm"}, {"type": "relu"},
                       {"type": "dropout", "p": 0.3}, {"type": "linear", "out_features": 10}]}
    runs = [train(spec, X_DIGITS[:400], Y_DIGITS[:400], {"type": "adam", "lr": 1e-3}, epochs=2,
                  diagnostics={"enabled": enabled}) for enabled in (True, False)]
    (on, on_cb), (off, _) = runs
    assert [h["train_loss"] for h in on.history] == [h["train_loss"] for h in off.history]
    assert [h["val_loss"] for h in on.history] == [h["val_loss"] for h in off.history]
    assert on_cb.init is not None and "findings" not in off.history[0]
    assert set(off.history[0]["layers"]["2"]) == {"type", "dead_fraction"}     # gradient health only


# ----------------------------------------------------------------------------- the numbers
def test_the_init_report_of_a_20_layer_relu_mlp_he_keeps_variance_and_n01_does_not():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 64, generator=g, dtype=torch.float64), torch.randint(0, 10, (256,), generator=g)
    spec = mlp("relu", 20, 256)
    he = Model.from_spec(spec, (64,), seed=0, dtype=torch.float64)                # He: the default for relu
    before = he.state_dict()
    report = init_report(he, losses.make("cross_entropy"), x, y)
    assert report["depth"]["hidden_layers"] == 20 and report["depth"]["last"]["key"] == "38"
    assert 0.5 <= report["depth"]["activation_std_ratio"] <= 2.0
    assert all(torch.equal(v, he.state_dict()[k]) for k, v in before.items())   # the model is untouched
    plain = Model.from_spec(spec, (64,), seed=0, dtype=torch.float64)
    gaussian_weights(1.0)(plain)
    ratio = init_report(plain, losses.make("cross_entropy"), x, y)["depth"]["activation_std_ratio"]
    assert ratio > 1e10                  # sqrt(256 / 2) ~ 11 per layer, 19 times


def test_activation_statistics_are_those_of_the_layer_outputs():
    spec = {"layers": [{"type": "linear", "out_features": 16}, {"type": "leaky_relu"},
                       {"type": "linear", "out_features": 16}, {"type": "sigmoid"},
                       {"type": "linear", "out_features": 16}, {"type": "tanh"}, {"type": "linear", "out_features": 3}]}
    model = Model.from_spec(spec, (5,), seed=0, dtype=torch.float64)
    gaussian_weights(2.0)(model)
    x = torch.randn(32, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    stats, outputs = ActivationStats(), {}

    def both(key, layer, out):
        stats(key, layer, out)
        outputs[key] = out.clone()
    model.forward(x, True, observe=both)
    for key, out in outputs.items():
        assert stats.stats[key]["output_std"].item() == pytest.approx(out.std(correction=0).item(), rel=1e-12)
        assert stats.stats[key]["output_mean"].item() == pytest.approx(out.mean().item(), rel=1e-12, abs=1e-15)
    s = outputs["3"]
    assert stats.stats["3"]["saturated_fraction"].item() == ((s * (1 - s)) < 0.0025).double().mean().item()
    t = outputs["5"]
    assert stats.stats["5"]["saturated_fraction"].item() == ((1 - t * t) < 0.01).double().mean().item()
    assert stats.stats["1"]["dead_fraction"].item() == 1 - (outputs["1"] > 0).any(0).double().mean().item()
    # tanh'(z) < 1% of tanh'(0) exactly when |z| > atanh(sqrt(0.99)) = 2.9932
    z = torch.tensor([2.99, 3.0, -3.0, 0.0], dtype=torch.float64)
    assert saturated_fraction("tanh", torch.tanh(z)).item() == 0.5
