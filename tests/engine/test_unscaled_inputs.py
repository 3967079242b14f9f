"""unscaled_inputs: at step 0, a finding when the training rows' feature sizes differ by more than 100x
(raw wine: proline near 1000 beside hue near 1), with the hint naming preprocessing.standardize; none when
the network standardizes its input first, when the features are comparable, or for token ids."""
from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_wine

from engine import Callbacks, Model, fit, losses, optim
from engine.data import split_indices, standard_scaling
from engine.diagnostics.input_scale import input_scale

WINE = load_wine()
X_WINE, Y_WINE = torch.tensor(WINE.data, dtype=torch.float32), torch.tensor(WINE.target)
NET = [{"type": "linear", "out_features": 16}, {"type": "relu"}, {"type": "linear", "out_features": 3}]
CONFIG = {"epochs": 1, "batch_size": 32, "validation_split": 0.2, "seed": 0}


class Collector(Callbacks):
    def __init__(self):
        self.findings, self.init = [], None

    def on_findings(self, findings):
        self.findings += findings

    def on_init_report(self, report):
        self.init = report


def run(layers, X, y=Y_WINE, **config):
    model = Model.from_spec({"layers": layers}, tuple(X.shape[1:]), seed=0)
    cb = Collector()
    fit(model, losses.make("cross_entropy"), optim.make({"type": "adam", "lr": 1e-3}, model.parameters()), X, y,
        {**CONFIG, **config}, task="classification", callbacks=cb)
    return cb


def test_raw_wine_gets_the_finding_at_step_0_naming_the_features_and_preprocessing_standardize():
    cb = run(NET, X_WINE)
    (found,) = [f for f in cb.findings if f["code"] == "unscaled_inputs"]
    train, _ = split_indices(len(X_WINE), 0.2, 0)
    rms = X_WINE[train].double().square().mean(0).sqrt()
    assert found["epoch"] == 0 and found["step"] == 0 and found["layer"] is None and found["severity"] == "warning"
    assert found["value"] == pytest.approx(float(rms.max() / rms.min()), rel=1e-9) and found["threshold"] == 100
    assert f"feature {int(rms.argmax())} is about {float(rms.max()):.3g}" in found["message"]   # proline, column 12
    assert int(rms.argmax()) == 12 and "preprocessing" in found["hint"] and '"standardize": "inputs"' in found["hint"]
    assert cb.init["input_scale"]["largest"]["feature"] == 12


def test_not_raised_when_the_network_standardizes_its_input():
    mean, std = standard_scaling(X_WINE)
    layers = [{"type": "standardize", "mean": mean.tolist(), "std": std.tolist()}, *NET]
    cb = run(layers, X_WINE)
    assert "unscaled_inputs" not in {f["code"] for f in cb.findings}
    assert cb.init["input_scale"] is None


def test_not_raised_below_the_threshold_and_the_threshold_is_configurable():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 3, generator=g) * torch.tensor([1.0, 10.0, 50.0])      # sizes 1 : 50
    y = torch.randint(0, 3, (200,), generator=g)
    assert "unscaled_inputs" not in {f["code"] for f in run(NET, X, y).findings}
    lowered = run(NET, X, y, diagnostics={"rules": {"unscaled_inputs": {"threshold": 20}}})
    assert "unscaled_inputs" in {f["code"] for f in lowered.findings}
    off = run(NET, X_WINE, diagnostics={"rules": {"unscaled_inputs": {"enabled": False}}})
    assert "unscaled_inputs" not in {f["code"] for f in off.findings}


def test_per_channel_on_images_and_none_for_token_ids_or_all_zero_features():
    images = torch.randn(10, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    images[:, 1] *= 500.0                                                    # channel 1 is 500x channel 0
    model = Model.from_spec({"layers": [{"type": "flatten"}, {"type": "linear", "out_features": 2}]}, (2, 4, 4))
    scale = input_scale(model, images)
    assert scale["largest"]["feature"] == 1 and 300 < scale["ratio"] < 800
    zeros = torch.zeros(10, 3)
    zeros[:, 0] = 5.0
    assert input_scale(Model.from_spec({"layers": [{"type": "linear", "out_features": 2}]}, (3,)), zeros) is None
    ids = torch.randint(0, 7, (4, 5))
    emb = Model.from_spec({"layers": [{"type": "embedding", "num_embeddings": 7, "embedding_dim": 3}]}, (5,))
    assert input_scale(emb, ids) is None
