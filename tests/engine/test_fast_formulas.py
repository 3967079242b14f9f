"""The faster forms of the layers' formulas give the plain form's numbers (issue 9).

- leaky_relu's derivative clamp(sign(y), slope, 1) is the where-form 1[x > 0] + slope 1[x <= 0].
- GELU's step y / x is Phi(x) (erf) or (1 + tanh(u)) / 2, at 0 and in the tails too, and the GELU
  backward built on it matches autograd at extreme inputs.
- conv's dx through the transposed convolution equals torch.nn.grad.conv2d_input.
- Average pooling over windows that tile the input: dx copied over each window equals the
  transposed convolution's, and the 2x2 forward as four strided views equals F.avg_pool2d, with
  rows and columns left over by floor mode too.
- The norms' statistics (sums of data shifted by one of its values) stay as accurate as torch's
  in float32 far from zero.
- A backward that writes dx into its own output (Layer.reuse_output) takes the same numbers as
  one that does not, and never touches an output anyone can still read: the model's output, one
  seen through a flatten or an identity dropout, or one an observer kept.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input as torch_conv2d_input

from engine import Model
from engine.layers.activation import gelu_step, leaky_relu_derivative
from engine.layers.conv import conv2d_input
from engine.layers.pool import avg_pool_2x2, avg_pool_input, avg_pool_input_tiled

F64 = torch.float64
EDGES = [0.0, -0.0, 1e-300, -1e-300, 1e-8, -1e-8, 1.0, -1.0, 5.0, -5.0, 30.0, -30.0, 40.0, -40.0]


def edge_inputs(dtype=F64, n: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g, dtype=F64) * 3
    return torch.cat([torch.tensor(EDGES, dtype=F64), x]).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 0.99])
def test_leaky_relu_derivative_is_the_where_form(slope, dtype):
    x = edge_inputs(dtype)
    y = F.leaky_relu(x, slope)
    derivative = leaky_relu_derivative(y, slope, torch.empty_like(y))
    assert torch.equal(derivative, torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope)))   # slope at 0


def test_gelu_step_is_phi_and_the_tanh_step():
    x = edge_inputs()
    phi = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
    tanh_step = 0.5 * (1 + torch.tanh(u))
    for approximate, reference in (("none", phi), ("tanh", tanh_step)):
        step = gelu_step(x, F.gelu(x, approximate=approximate), torch.empty_like(x))
        assert step[:2].tolist() == [0.5, 0.5]                                 # x = 0 and -0: 0 / 0
        assert ((step - reference).abs() <= 1e-15 + 1e-14 * reference.abs()).all(), approximate


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_backward_matches_autograd_at_extreme_inputs(approximate):
    x = edge_inputs().reshape(-1, 1)
    dy = torch.linspace(-2, 3, x.numel(), dtype=F64).reshape(-1, 1)
    gelu = {"type": "gelu", "approximate": approximate}
    for consumer in ([], [{"type": "tanh"}]):          # the model's output; an output dx may be written into
        model = Model.from_spec({"layers": [gelu, *consumer]}, (1,), dtype=F64)
        model.forward(x)
        dx = model.backward(dy)
        ref_x = x.clone().requires_grad_(True)
        ref = F.gelu(ref_x, approximate=approximate)
        (torch.tanh(ref) if consumer else ref).backward(dy)
        assert ((dx - ref_x.grad).abs() <= 1e-13 * (1 + ref_x.grad.abs())).all()


@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 3, 9, 10), (3, 3), (1, 1), (1, 1)), ((2, 3, 9, 10), (3, 3), (2, 2), (1, 1)),
    ((1, 4, 11, 7), (2, 3), (3, 2), (0, 1)), ((3, 2, 8, 8), (3, 1), (2, 1), (2, 0)),
    ((2, 5, 16, 16), (1, 1), (2, 2), (0, 0))])
def test_conv2d_input_equals_torch_nn_grad(shape, kernel, stride, padding):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g, dtype=F64)
    weight = torch.randn((6, shape[1], *kernel), generator=g, dtype=F64)
    dy = torch.randn(F.conv2d(x, weight, stride=stride, padding=padding).shape, generator=g, dtype=F64)
    ours = conv2d_input(dy, weight, shape[2:], stride, padding)
    reference = torch_conv2d_input(shape, weight, dy, stride=stride, padding=padding)
    assert ours.shape == x.shape
    assert (ours - reference).abs().max().item() <= 1e-12 * reference.abs().max().item()


@pytest.mark.parametrize("shape,kernel", [((2, 3, 8, 8), (2, 2)), ((2, 3, 9, 11), (2, 2)), ((1, 4, 12, 12), (3, 4)),
                                          ((3, 2, 7, 16), (7, 16)), ((2, 2, 10, 5), (3, 1))])
def test_tiled_avg_pool_equals_the_plain_forms(shape, kernel):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g, dtype=F64)
    y = F.avg_pool2d(x, kernel)
    dy = torch.randn(y.shape, generator=g, dtype=F64)
    tiled = avg_pool_input_tiled(dy, kernel, shape[2:])
    assert tiled.shape == x.shape
    assert (tiled - avg_pool_input(dy, kernel, kernel, (0, 0), shape[2:])).abs().max().item() <= 1e-15
    if kernel == (2, 2):
        assert (avg_pool_2x2(x) - y).abs().max().item() <= 1e-15
    ref = x.clone().requires_grad_(True)                     # and both are the derivative autograd takes
    F.avg_pool2d(ref, kernel).backward(dy)
    assert (tiled - ref.grad).abs().max().item() <= 1e-15


@pytest.mark.parametrize("norm,shape", [("batchnorm", (8, 6, 6)), ("batchnorm", (8,)), ("layernorm", (3, 40))])
def test_norm_statistics_far_from_zero_are_as_accurate_as_torchs(norm, shape):
    # float32 activations whose means sit 20,000 of their spreads and more from 0, a different mean per
    # channel (per row): the statistics lose no digits
    g = torch.Generator().manual_seed(5)
    offsets = 1000 * torch.arange(1, shape[0] + 1, dtype=F64).view(-1, *[1] * (len(shape) - 1))
    x64 = offsets + torch.randn(64, *shape, generator=g, dtype=F64) * 0.05
    dy64 = torch.randn(x64.shape, generator=g, dtype=F64)
    outs = {}
    for dtype in (torch.float32, F64):
        model = Model.from_spec({"layers": [{"type": norm}]}, shape, dtype=dtype)
        y = model.forward(x64.to(dtype))
        outs[dtype] = (y, model.backward(dy64.to(dtype)))
    ref = x64.to(torch.float32).requires_grad_(True)
    if norm == "batchnorm":
        y_torch = F.batch_norm(ref, None, None, torch.ones(shape[0]), torch.zeros(shape[0]), training=True)
    else:
        y_torch = F.layer_norm(ref, shape[-1:], torch.ones(shape[-1]), torch.zeros(shape[-1]))
    y_torch.backward(dy64.to(torch.float32))
    for ours, theirs, exact in zip(outs[torch.float32], (y_torch.detach(), ref.grad), outs[F64]):
        ours_err = (ours.double() - exact).abs().max().item()
        torch_err = (theirs.double() - exact).abs().max().item()
        assert ours_err <= 2 * torch_err + 1e-6 * exact.abs().max().item()


ACTIVATIONS = [{"type": "relu"}, {"type": "leaky_relu", "negative_slope": 0.1}, {"type": "sigmoid"},
               {"type": "tanh"}, {"type": "gelu"}, {"type": "gelu", "approximate": "tanh"}]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a["type"] + a.get("approximate", ""))
def test_outputs_reused_by_backward_are_nobody_elses(activation):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, generator=g, dtype=F64)
    lin = {"type": "linear", "out_features": 6}
    # an output that stays readable after backward: the model's own, or behind a view / an identity
    for tail in ([], [{"type": "flatten"}], [{"type": "dropout", "p": 0.0}]):
        model = Model.from_spec({"layers": [lin, activation, *tail]}, (4,), seed=1, dtype=F64)
        y = model.forward(x)
        before = y.clone()
        model.backward(torch.randn(y.shape, generator=g, dtype=F64))
        assert torch.equal(y, before), tail
    # inside the network: dx written into the activation's output gives the fresh tensor's numbers,
    # and an observer's kept outputs (which turn the reuse off) are left as they were
    spec = {"layers": [lin, activation, {"type": "linear", "out_features": 3}]}
    model = Model.from_spec(spec, (4,), seed=1, dtype=F64)
    dout = torch.randn(5, 3, generator=g, dtype=F64)
    kept: dict[str, torch.Tensor] = {}
    results = []
    for observe in (None, lambda key, layer, out: kept.setdefault(key, out)):
        model.forward(x, observe=observe)
        results.append((model.backward(dout), model.flat_grads.clone()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    reference = Model.from_spec(spec, (4,), seed=1, dtype=F64)
    assert torch.equal(kept["1"], reference.layers[1].forward(reference.layers[0].forward(x, False), False))
