"""Weight initialization: seeding, the schemes' statistics, the default chosen from the consuming
activation, and agreement with torch.nn.init's gains and fans."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine import Model
from engine.init import calculate_gain

F64 = torch.float64
FAN_IN, FAN_OUT = 1024, 512          # a large linear layer: 524,288 weights, sample std within ~0.1%


def build(layers, in_shape, seed=0, dtype=F64) -> Model:
    return Model.from_spec({"layers": layers}, in_shape, seed=seed, dtype=dtype)


def big_linear(*after, init=None, bias=True) -> Model:
    first = {"type": "linear", "out_features": FAN_OUT, "bias": bias, **({"init": init} if init else {})}
    return build([first, *after], (FAN_IN,))


def std(w: torch.Tensor) -> float:
    return w.double().std().item()


# ----------------------------------------------------------------------------- seeding
NETS = [
    ([{"type": "linear", "out_features": 8}, {"type": "relu"}, {"type": "linear", "out_features": 3}], (5,)),
    ([{"type": "conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "tanh"}, {"type": "flatten"},
      {"type": "linear", "out_features": 2}], (2, 5, 5)),
]


@pytest.mark.parametrize("layers,in_shape", NETS)
def test_same_seed_same_weights_different_seed_different(layers, in_shape):
    a, b, c = build(layers, in_shape, seed=42), build(layers, in_shape, seed=42), build(layers, in_shape, seed=43)
    assert torch.equal(a.flat_params, b.flat_params)
    sa, sc = a.state_dict(), c.state_dict()
    drawn = [k for k in sa if sa[k].any()]             # He / Xavier biases start at 0 whatever the seed
    assert any(k.endswith("weight") for k in drawn)
    for k in drawn:
        assert not torch.equal(sa[k], sc[k]), f"{k} did not change with the seed"


def test_float32_weights_are_the_rounded_float64_weights():
    layers, in_shape = NETS[1]
    w64, w32 = build(layers, in_shape, seed=1).flat_params, build(layers, in_shape, seed=1, dtype=torch.float32).flat_params
    assert w32.dtype == torch.float32 and torch.equal(w32, w64.float())


# ----------------------------------------------------------------------------- gains
@pytest.mark.parametrize("activation,param", [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                                              ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0.0)])
def test_calculate_gain_matches_torch(activation, param):
    assert calculate_gain(activation, param) == pytest.approx(nn.init.calculate_gain(activation, param), rel=1e-15)


def test_gain_of_activations_torch_does_not_list():
    # torch.nn.init has no gain for these; they count as linear (gain 1)
    assert calculate_gain("gelu") == calculate_gain("softmax") == calculate_gain("identity") == 1.0
    with pytest.raises(ValueError, match="no gain for activation 'selu'"):
        calculate_gain("selu")


# ----------------------------------------------------------------------------- defaults by consumer
def test_relu_consumer_gets_he_normal():
    m = big_linear({"type": "relu"})
    w, b = m.parameters()["0.weight"], m.parameters()["0.bias"]
    assert std(w) == pytest.approx(math.sqrt(2 / FAN_IN), rel=0.02)
    assert abs(w.mean().item()) < 0.05 * math.sqrt(2 / FAN_IN)
    assert not b.any(), "He init starts the bias at 0"


@pytest.mark.parametrize("slope", [0.01, 0.2])
def test_leaky_relu_consumer_gets_he_with_its_slope(slope):
    m = big_linear({"type": "leaky_relu", "negative_slope": slope})
    gain = nn.init.calculate_gain("leaky_relu", slope)
    assert std(m.parameters()["0.weight"]) == pytest.approx(gain / math.sqrt(FAN_IN), rel=0.02)


@pytest.mark.parametrize("activation,gain", [("tanh", 5 / 3), ("sigmoid", 1.0)])
def test_tanh_sigmoid_consumer_gets_xavier_uniform(activation, gain):
    w = big_linear({"type": activation}).parameters()["0.weight"]
    bound = gain * math.sqrt(6 / (FAN_IN + FAN_OUT))
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.999 * bound
    assert std(w) == pytest.approx(bound / math.sqrt(3), rel=0.02)


@pytest.mark.parametrize("between", ["batchnorm", "layernorm", "dropout"])
def test_normalization_and_dropout_pass_the_activation_through(between):
    m = big_linear({"type": between}, {"type": "relu"})
    assert std(m.parameters()["0.weight"]) == pytest.approx(math.sqrt(2 / FAN_IN), rel=0.02)


@pytest.mark.parametrize("after", [[], [{"type": "linear", "out_features": 3}], [{"type": "softmax"}]])
def test_no_activation_gets_torch_default(after):
    p = big_linear(*after).parameters()
    bound = 1 / math.sqrt(FAN_IN)
    for name in ("0.weight", "0.bias"):
        v = p[name]
        assert v.abs().max().item() <= bound, name
        assert v.abs().max().item() > 0.99 * bound, name
    assert std(p["0.weight"]) == pytest.approx(bound / math.sqrt(3), rel=0.02)


# ----------------------------------------------------------------------------- explicit schemes
@pytest.mark.parametrize("consumer,gain", [(None, 1.0), ("relu", math.sqrt(2))])
@pytest.mark.parametrize("scheme", ["xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "zeros"])
def test_explicit_scheme_statistics(scheme, consumer, gain):
    m = big_linear(*([{"type": consumer}] if consumer else []), init=scheme)
    w, b = m.parameters()["0.weight"], m.parameters()["0.bias"]
    assert not b.any(), "only torch_default draws a bias"
    if scheme == "zeros":
        assert not w.any()
        return
    target = {"xavier_uniform": gain * math.sqrt(2 / (FAN_IN + FAN_OUT)),
              "xavier_normal": gain * math.sqrt(2 / (FAN_IN + FAN_OUT)),
              "he_uniform": gain / math.sqrt(FAN_IN),
              "he_normal": gain / math.sqrt(FAN_IN)}[scheme]
    assert std(w) == pytest.approx(target, rel=0.02)
    if scheme.endswith("uniform"):
        assert w.abs().max().item() <= target * math.sqrt(3) * (1 + 1e-12)
    else:
        assert w.abs().max().item() > 4 * target       # a normal's tails, not a uniform's box


# ----------------------------------------------------------------------------- conv
def test_conv_fans_match_torch():
    m = build([{"type": "conv2d", "out_channels": 8, "kernel_size": (3, 5)}], (3, 9, 9))
    w = m.parameters()["0.weight"]
    assert tuple(w.shape) == (8, 3, 3, 5)
    assert m.layers[0].fans() == nn.init._calculate_fan_in_and_fan_out(w) == (3 * 15, 8 * 15)


def test_conv_he_normal_and_torch_default_bounds():
    cin, k = 64, 3
    he = build([{"type": "conv2d", "out_channels": 64, "kernel_size": k}, {"type": "relu"}], (cin, 8, 8))
    assert std(he.parameters()["0.weight"]) == pytest.approx(math.sqrt(2 / (cin * k * k)), rel=0.02)
    p = build([{"type": "conv2d", "out_channels": 256, "kernel_size": k}], (cin, 8, 8)).parameters()
    bound = 1 / math.sqrt(cin * k * k)
    for name in ("0.weight", "0.bias"):
        assert p[name].abs().max().item() <= bound, name
        assert p[name].abs().max().item() > 0.95 * bound, name


# ----------------------------------------------------------------------------- norms
@pytest.mark.parametrize("spec,in_shape,twin", [
    ({"type": "batchnorm"}, (6,), nn.BatchNorm1d(6)),
    ({"type": "batchnorm"}, (6, 2, 2), nn.BatchNorm2d(6)),
    ({"type": "batchnorm", "affine": False}, (6,), nn.BatchNorm1d(6, affine=False)),
    ({"type": "layernorm"}, (3, 6), nn.LayerNorm(6)),
])
def test_norm_layers_start_as_torch_does_whatever_feeds_them(spec, in_shape, twin):
    # a relu after the norm would make He the default scheme: the norm must still start at 1 / 0
    m = build([spec, {"type": "relu"}], in_shape)
    ours, ref = m.state_dict(), {f"0.{k}": v for k, v in twin.state_dict().items()}
    assert list(ours) == list(ref)
    for k, v in ref.items():
        assert ours[k].dtype == (v.dtype if v.dtype == torch.long else F64), k
        assert torch.equal(ours[k], v.to(ours[k].dtype)), k
