"""The standardize layer: (x - mean) / std per feature, its inverse x * std + mean, mean and std buffers.

Against autograd on the torch twin in float64 (test_layers' harness, 1e-10), its backward is the written
formula dy / std (dy * std), its statistics are buffers (in the state_dict, not parameters, so no optimizer
or gradient check sees them), the spec's lists fill them, and the twin loads the state_dict strictly."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from chainrule.twin import twin
from engine import Model, SpecError, losses, optim
from engine.gradcheck import gradcheck
from test_layers import compare_with_torch, lin, t

F64 = torch.float64
CASES = {
    "features": ([t("standardize")], (5,)),
    "inverse": ([t("standardize", inverse=True)], (3,)),
    "channels": ([t("standardize"), t("tanh")], (3, 2, 4)),
    "given": ([t("standardize", mean=[1.0, -2.0, 1e3], std=[0.5, 2.0, 300.0]), lin(4)], (3,)),
    "network": ([t("standardize"), lin(6), t("relu"), lin(2), t("standardize", inverse=True)], (4,)),
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_autograd_on_the_twin(case, training):
    layers, in_shape = CASES[case]
    compare_with_torch(layers, in_shape, training)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", ["channels", "given", "network"])
def test_matches_autograd_on_cuda(case):
    layers, in_shape = CASES[case]
    compare_with_torch(layers, in_shape, True, device="cuda")


@pytest.mark.parametrize("inverse", [False, True])
def test_backward_is_dy_over_std_and_forward_the_formula(inverse):
    mean, std = [0.5, -1.0, 1000.0], [2.0, 0.25, 315.0]
    model = Model.from_spec({"layers": [t("standardize", mean=mean, std=std, inverse=inverse)]}, (3,), dtype=F64)
    m, s = torch.tensor(mean, dtype=F64), torch.tensor(std, dtype=F64)
    x, dy = torch.randn(7, 3, dtype=F64), torch.randn(7, 3, dtype=F64)
    y = model.forward(x, training=True)
    assert torch.equal(y, x * s + m if inverse else (x - m) / s)
    assert torch.equal(model.backward(dy), dy * s if inverse else dy / s)


def test_mean_and_std_are_buffers_in_the_state_dict_not_parameters():
    spec = {"layers": [t("standardize", mean=[1.0, 2.0], std=[3.0, 4.0]), lin(3), t("standardize", inverse=True)]}
    model = Model.from_spec(spec, (2,), seed=0)
    assert set(model.parameters()) == {"1.weight", "1.bias"} and model.n_parameters == 9
    assert list(model.state_dict()) == ["0.mean", "0.std", "1.weight", "1.bias", "2.mean", "2.std"]
    assert model.state_dict()["0.std"].tolist() == [3.0, 4.0]
    assert model.state_dict()["2.mean"].tolist() == [0.0, 0.0, 0.0]          # no values: identity until loaded
    assert model.state_dict()["2.std"].tolist() == [1.0, 1.0, 1.0]
    adam = optim.make({"type": "adam", "lr": 0.1}, model.parameters())
    x, y = torch.randn(8, 2), torch.randn(8, 3)
    loss = losses.make("mse")
    before = model.buffers()["0.mean"].clone()
    for _ in range(3):
        loss.forward(model.forward(x, training=True), y)
        model.backward(loss.backward())
        adam.step(model.grads())
    assert torch.equal(model.buffers()["0.mean"], before)


def test_gradcheck_checks_the_parameters_and_input_only_and_passes():
    spec = {"layers": [t("standardize", mean=[5.0, -3.0, 0.0, 100.0], std=[2.0, 0.5, 1.0, 50.0]), lin(5),
                       t("tanh"), lin(2), t("standardize", mean=[10.0, -1.0], std=[3.0, 0.1], inverse=True)]}
    model = Model.from_spec(spec, (4,), seed=3, dtype=F64)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 4, generator=g, dtype=F64) * 10, torch.randn(6, 2, generator=g, dtype=F64)
    report = gradcheck(model, losses.make("mse"), x, y)
    assert report["passed"], report
    names = {e["name"] for layer in report["layers"] for e in layer["tensors"]}
    assert names == {"1.weight", "1.bias", "3.weight", "3.bias"}


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_the_twin_of_a_spec_with_statistics_predicts_the_same_and_loads_strict(dtype):
    spec = {"layers": [t("standardize", mean=[13.0, 2.3, 746.9], std=[0.81, 1.1, 315.0]), lin(8), t("relu"),
                       lin(1), t("standardize", mean=[152.1], std=[77.0], inverse=True)]}
    model = Model.from_spec(spec, (3,), seed=1, dtype=dtype)
    net = twin(spec, (3,), dtype=dtype)
    assert set(net.state_dict()) == set(model.state_dict())
    net.load_state_dict(model.state_dict(), strict=True)
    x = torch.tensor([[13.5, 1.0, 1100.0], [12.0, 4.0, 400.0]], dtype=dtype)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), model.predict(x))
    fresh = twin(spec, (3,), dtype=dtype)                       # the spec's lists alone give the same buffers
    assert torch.equal(fresh.state_dict()["0.mean"], model.state_dict()["0.mean"])
    assert torch.equal(fresh.state_dict()["4.std"], model.state_dict()["4.std"])


def test_a_count_that_does_not_fit_the_input_is_a_spec_error():
    with pytest.raises(SpecError, match=r"layers\[0\] \(standardize\).*2 values.*3 features"):
        Model.from_spec({"layers": [t("standardize", mean=[0.0, 1.0], std=[1.0, 1.0])]}, (3,))


@pytest.mark.parametrize("fields, message", [
    ({"mean": [0.0]}, "both mean and std"),
    ({"mean": [0.0, 1.0], "std": [1.0]}, "mean has 2 values and std 1"),
    ({"mean": [0.0], "std": [0.0]}, "greater than 0"),
])
def test_bad_statistics_are_validation_errors(fields, message):
    with pytest.raises(ValidationError, match=message):
        Model.from_spec({"layers": [t("standardize", **fields)]}, (1,))


def test_standard_scaling_is_per_feature_or_channel_with_the_population_std_and_1_for_a_constant():
    from engine.data import standard_scaling
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 2, 2, generator=g, dtype=F64) * torch.tensor([1.0, 10.0, 0.0]).view(1, 3, 1, 1) + 5
    mean, std = standard_scaling(images)
    per_channel = images.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(mean, per_channel.mean(1), rtol=1e-15, atol=0)
    torch.testing.assert_close(std[:2], per_channel[:2].std(1, correction=0), rtol=1e-15, atol=0)
    assert std[2] == 1.0                                     # channel 2 is 5 everywhere: centred, not divided by 0
    y_mean, y_std = standard_scaling(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert y_mean.tolist() == [2.5] and y_std.tolist() == [pytest.approx(1.25 ** 0.5)]
