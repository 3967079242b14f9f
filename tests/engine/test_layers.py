"""Every engine layer against its torch.nn twin (autograd as the reference), in float64.

The engine model is built through Model.from_spec; the twin is chainrule.twin's nn.Sequential (or
graph module for DAG specs) loaded with the engine's state_dict(strict=True), so both hold the
same, randomized, parameters and buffers. Output, dx, every parameter gradient and every
buffer must agree to a relative error of 1e-10.
"""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from chainrule.twin import twin
from engine import Model
from engine.model import Plan

F64 = torch.float64
TOL = 1e-10
TINY = torch.finfo(F64).tiny


def rel_err(a: Tensor, b: Tensor) -> float:
    """max|a - b| / max|b| (b the reference), guarded against an all-zero reference."""
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != reference {tuple(b.shape)}"
    return (a.double() - b.double()).abs().max().item() / max(b.double().abs().max().item(), TINY)


# ----------------------------------------------------------------------------- spec shorthands
def lin(n, **kw):
    return {"type": "linear", "out_features": n, **kw}


def conv(c, k, **kw):
    return {"type": "conv2d", "out_channels": c, "kernel_size": k, **kw}


def t(kind, **kw):
    return {"type": kind, **kw}


# ----------------------------------------------------------------------------- torch twins
def make_twin(graph: Plan, seed: int, device="cpu") -> nn.Module:
    """chainrule.twin in float64 with dropout masks drawn as the Model seeded with `seed` draws them."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return twin(graph.spec, graph.input_shape, generator=generator, dtype=F64, device=device)


def randomize_state(model: Model, g: torch.Generator) -> dict[str, Tensor]:
    """Random parameters and running stats (not torch's init values, which hide mistakes)."""
    state = model.state_dict()
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            v.fill_(7)
        elif k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g, dtype=F64) + 0.5)
        else:
            v.copy_(torch.randn(v.shape, generator=g, dtype=F64))
    model.load_state_dict(state, strict=True)
    return state


# ----------------------------------------------------------------------------- the catalogue
SEQ_CASES = {
    "linear": ([lin(5)], (4,)),
    "linear_nobias": ([lin(5, bias=False)], (4,)),
    "relu": ([lin(6), t("relu")], (4,)),
    "leaky_relu": ([t("leaky_relu", negative_slope=0.2)], (7,)),
    "leaky_relu_default": ([lin(6), t("leaky_relu")], (4,)),
    "leaky_relu_slope0": ([t("leaky_relu", negative_slope=0.0)], (2, 3, 3)),
    "sigmoid": ([t("sigmoid")], (7,)),
    "tanh": ([t("tanh")], (2, 3, 3)),
    "gelu_erf": ([t("gelu")], (9,)),
    "gelu_tanh": ([t("gelu", approximate="tanh")], (9,)),
    "softmax": ([lin(5), t("softmax")], (4,)),
    "softmax_channels": ([t("softmax", dim=1)], (3, 2, 2)),
    "softmax_dim_neg2": ([t("softmax", dim=-2)], (3, 4)),
    "conv": ([conv(4, 3)], (2, 6, 6)),
    "conv_stride_pad_nobias": ([conv(3, 3, stride=2, padding=1, bias=False)], (2, 7, 7)),
    "conv_rect": ([conv(3, (3, 2), stride=(2, 1), padding=(1, 0))], (2, 6, 5)),
    "maxpool": ([t("maxpool2d", kernel_size=2)], (2, 4, 4)),
    "maxpool_stride_pad": ([t("maxpool2d", kernel_size=3, stride=2, padding=1)], (2, 7, 7)),
    "maxpool_overlap": ([t("maxpool2d", kernel_size=3, stride=1)], (2, 5, 5)),
    "maxpool_rect": ([t("maxpool2d", kernel_size=(2, 3), stride=(1, 2), padding=(1, 1))], (2, 5, 6)),
    "avgpool": ([t("avgpool2d", kernel_size=2)], (2, 4, 4)),
    "avgpool_stride_pad": ([t("avgpool2d", kernel_size=3, stride=2, padding=1)], (2, 7, 7)),
    "avgpool_rect": ([t("avgpool2d", kernel_size=(3, 2), stride=(1, 2), padding=(1, 0))], (2, 5, 6)),
    "avgpool_floor_drops_edges": ([t("avgpool2d", kernel_size=2)], (2, 5, 7)),      # last row, column unread
    "avgpool_floor_stride_pad": ([t("avgpool2d", kernel_size=3, stride=2, padding=1)], (2, 8, 8)),
    "maxpool_floor_drops_edges": ([t("maxpool2d", kernel_size=(2, 3), stride=2)], (3, 5, 8)),
    "flatten": ([t("flatten")], (2, 3, 4)),
    "flatten_start2": ([t("flatten", start_dim=2)], (2, 3, 4)),
    "flatten_negative": ([t("flatten", start_dim=-3, end_dim=-2)], (2, 3, 4)),
    "batchnorm1d": ([t("batchnorm")], (5,)),
    "batchnorm1d_noaffine": ([t("batchnorm", affine=False, eps=1e-3)], (5,)),
    "batchnorm2d": ([t("batchnorm", momentum=0.3)], (3, 4, 4)),
    "batchnorm2d_noaffine": ([t("batchnorm", affine=False)], (3, 2, 3)),
    "layernorm": ([t("layernorm")], (6,)),
    "layernorm_3d": ([t("layernorm", eps=1e-3)], (2, 3, 5)),
    "layernorm_noaffine": ([t("layernorm", elementwise_affine=False)], (6,)),
    "dropout": ([t("dropout", p=0.3)], (20,)),
    "dropout_p0": ([t("dropout", p=0.0)], (6,)),
    "dropout_2d": ([t("dropout")], (2, 3, 3)),
    "conv1d": ([t("conv1d", out_channels=4, kernel_size=3)], (3, 8)),
    "conv1d_stride_pad_dilation": ([t("conv1d", out_channels=2, kernel_size=3, stride=2, padding=1, dilation=2,
                                      bias=False)], (3, 10)),
    "seq_pool_mean": ([t("seq_pool", mode="mean"), lin(3)], (5, 4)),
    "seq_pool_max": ([t("seq_pool", mode="max"), lin(3)], (5, 4)),
    "cnn": ([conv(4, 3, padding=1, bias=False), t("batchnorm"), t("relu"), t("maxpool2d", kernel_size=2),
             t("flatten"), t("dropout", p=0.2), lin(6), t("layernorm"), t("gelu"), lin(3),
             t("softmax")], (2, 6, 6)),
}

DAG_CASES = {
    "add_residual": ([lin(6, name="fc", inputs=["input"]), t("tanh", name="act"),
                      t("add", name="res", inputs=["input", "act"]), lin(3, name="out")], (6,)),
    "add_three": ([lin(4, name="a", inputs=["input"]), lin(4, name="b", inputs=["input"]),
                   t("sigmoid", name="s", inputs=["a"]),
                   t("add", name="sum", inputs=["a", "b", "s"])], (5,)),
    "concat_features": ([lin(4, name="a", inputs=["input"]), lin(3, name="b", inputs=["input"]),
                         t("concat", name="cat", inputs=["a", "b"]), lin(2, name="head")], (5,)),
    "concat_channels": ([conv(4, 3, padding=1, name="c1", inputs=["input"]),
                         conv(2, 1, name="c2", inputs=["input"]),
                         t("concat", name="cat", inputs=["c1", "c2", "input"], dim=1),
                         t("tanh", name="act")], (2, 4, 4)),
    "concat_width": ([conv(2, (1, 3), name="c", inputs=["input"]),
                      t("concat", name="cat", inputs=["input", "c"], dim=-1)], (2, 5, 5)),
    "resblock_conv": ([conv(3, 3, padding=1, bias=False, name="conv", inputs=["input"]), t("batchnorm", name="bn"),
                       t("relu", name="act"), t("add", name="res", inputs=["act", "input"]),
                       t("avgpool2d", name="pool", kernel_size=2), t("flatten", name="flat"),
                       lin(2, name="fc")], (3, 4, 4)),
}

CASES = {**SEQ_CASES, **DAG_CASES}
# (a bias straight before a training-mode batchnorm has a gradient of exactly 0: batchnorm subtracts
#  it back out; the reference's roundoff ~1e-17 then makes a relative error meaningless, so those
#  convs have bias=False.)


def compare_with_torch(layers, in_shape, training: bool, n: int = 3, seed: int = 0, device="cpu"):
    model = Model.from_spec({"layers": layers}, in_shape, seed=seed, dtype=F64, device=device)
    g = torch.Generator().manual_seed(1234)
    state = randomize_state(model, g)
    twin = make_twin(model.plan, seed, device)
    twin.load_state_dict(state, strict=True)
    twin.train(training)

    x = torch.randn(n, *in_shape, generator=g, dtype=F64).to(device)
    x_ref = x.clone().requires_grad_(True)
    y_ref = twin(x_ref)
    dy = torch.randn(y_ref.shape, generator=g, dtype=F64).to(device)
    y_ref.backward(dy)

    x_before, dy_before = x.clone(), dy.clone()
    y = model.forward(x, training=training, for_backward=True)   # eval mode too: its gradient is checked
    assert tuple(y.shape) == (n, *model.output_shape)
    assert rel_err(y, y_ref) <= TOL, "output"
    buffers = dict(twin.named_buffers())
    assert set(model.buffers()) == set(buffers)
    for k, b in model.buffers().items():
        assert b.dtype == buffers[k].dtype, k
        assert rel_err(b, buffers[k]) <= TOL, k

    dx = model.backward(dy)
    assert rel_err(dx, x_ref.grad) <= TOL, "dx"
    params = dict(twin.named_parameters())
    assert set(model.grads()) == set(params)
    for k, gr in model.grads().items():
        assert rel_err(gr, params[k].grad) <= TOL, k
    assert torch.equal(x, x_before) and torch.equal(dy, dy_before), "a layer wrote into x or dy"
    return model


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch(case, training):
    layers, in_shape = CASES[case]
    model = compare_with_torch(layers, in_shape, training)
    # after backward a layer keeps no activations
    for key, layer in model.layer_items():
        kept = [a for a, v in vars(layer).items() if isinstance(v, Tensor)]
        assert not kept and layer.cache is None, f"layer {key} ({layer.kind}) still holds {kept} after backward"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batchnorm_running_stats_over_steps(seed):
    """Three training forwards then eval: running mean / unbiased var / count as torch's."""
    for in_shape in [(4,), (3, 2, 2)]:
        model = Model.from_spec({"layers": [t("batchnorm", momentum=0.2)]}, in_shape, dtype=F64)
        twin = make_twin(model.plan, 0)
        twin.load_state_dict(model.state_dict(), strict=True)   # fresh torch init on both sides
        g = torch.Generator().manual_seed(seed)
        for _ in range(3):
            x = torch.randn(5, *in_shape, generator=g, dtype=F64) * 3 + 1
            model.forward(x, training=True)
            twin.train()(x)
        for k, b in twin.state_dict().items():
            assert rel_err(model.state_dict()[k], b) <= TOL, k
        assert int(model.buffers()["0.num_batches_tracked"]) == 3
        x = torch.randn(2, *in_shape, generator=g, dtype=F64)
        assert rel_err(model.forward(x, training=False), twin.eval()(x)) <= TOL


def test_batchnorm_running_var_is_unbiased():
    model = Model.from_spec({"layers": [t("batchnorm", momentum=1.0)]}, (2,), dtype=F64)
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]], dtype=F64)
    model.forward(x, training=True)
    b = model.buffers()
    assert torch.allclose(b["0.running_mean"], torch.tensor([2.0, 4.0], dtype=F64))
    assert torch.allclose(b["0.running_var"], torch.tensor([2.0, 8.0], dtype=F64))   # /(m-1), m = 2


@pytest.mark.parametrize("in_shape", [(4,), (3, 1, 1)])
def test_batchnorm_single_value_per_channel_raises_in_training(in_shape):
    model = Model.from_spec({"layers": [t("batchnorm")]}, in_shape, dtype=F64)
    x = torch.randn(1, *in_shape, dtype=F64)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        model.forward(x, training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        make_twin(model.plan, 0).train()(x)
    assert model.forward(x, training=False).shape == x.shape    # eval uses running stats: fine


# ----------------------------------------------------------------------------- dropout
def test_dropout_mask_reconstructed():
    p = 0.3
    model = Model.from_spec({"layers": [t("dropout", p=p)]}, (1000,), seed=5, dtype=F64)
    x = torch.randn(4, 1000, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = model.forward(x, training=True)
    mask = (y != 0).to(F64)                                   # x is never exactly 0
    assert rel_err(y, x * mask / (1 - p)) <= TOL
    expected = torch.empty_like(x).bernoulli_(1 - p, generator=torch.Generator().manual_seed(5))
    assert torch.equal(mask, expected), "mask is not the seeded generator's bernoulli draw"
    assert abs(1 - mask.mean().item() - p) < 0.03
    dy = torch.randn_like(x)
    assert rel_err(model.backward(dy), dy * mask / (1 - p)) <= TOL
    # the next batch draws a fresh mask from the same stream
    assert not torch.equal(model.forward(x, training=True) != 0, mask.bool())


def test_dropout_same_seed_same_masks():
    x = torch.randn(3, 50, dtype=F64)
    ys = [Model.from_spec({"layers": [t("dropout")]}, (50,), seed=9, dtype=F64).forward(x, True)
          for _ in range(2)]
    assert torch.equal(ys[0], ys[1])


@pytest.mark.parametrize("p,training", [(0.0, True), (0.5, False)])
def test_dropout_identity_without_rng_draw(p, training):
    model = Model.from_spec({"layers": [t("dropout", p=p)]}, (10,), dtype=F64)
    state = model.generator.get_state()
    x, dy = torch.randn(3, 10, dtype=F64), torch.randn(3, 10, dtype=F64)
    assert torch.equal(model.forward(x, training=training, for_backward=True), x)
    assert torch.equal(model.backward(dy), dy)
    assert torch.equal(model.generator.get_state(), state), "identity dropout drew random numbers"


def test_add_backward_hands_the_same_gradient_to_each_input():
    model = Model.from_spec({"layers": DAG_CASES["add_three"][0]}, (5,), dtype=F64)
    add = model.layers[-1]
    model.forward(torch.randn(2, 5, dtype=F64))
    dy = torch.randn(2, 4, dtype=F64)
    dxs = add.backward(dy)
    assert len(dxs) == 3 and all(d is dy for d in dxs)


# ----------------------------------------------------------------------------- finite differences
FD_NETS = {
    "cnn": ([conv(2, 2), t("batchnorm"), t("gelu"), t("maxpool2d", kernel_size=2, stride=1),
             t("flatten"), lin(3), t("layernorm"), t("sigmoid")], (2, 4, 4)),
    "dag": ([lin(4, name="a", inputs=["input"]), t("leaky_relu", name="act", negative_slope=0.1),
             lin(3, name="b", inputs=["input"]), t("concat", name="cat", inputs=["act", "b", "input"]),
             lin(3, name="c"), t("tanh", name="t"), t("add", name="res", inputs=["t", "b"]),
             t("softmax", name="out")], (3,)),
}


@pytest.mark.parametrize("net", list(FD_NETS))
def test_centred_finite_differences(net):
    """dL/dtheta and dL/dx by (L(+h) - L(-h)) / 2h for every entry, L = sum(y * dy) (CS231n)."""
    layers, in_shape = FD_NETS[net]
    model = Model.from_spec({"layers": layers}, in_shape, seed=3, dtype=F64)
    g = torch.Generator().manual_seed(7)
    randomize_state(model, g)
    x = torch.randn(3, *in_shape, generator=g, dtype=F64)
    dy = torch.randn(3, *model.output_shape, generator=g, dtype=F64)

    def loss() -> float:
        return (model.forward(x, training=True) * dy).sum().item()

    model.forward(x, training=True)
    dx = model.backward(dy)
    analytic = torch.cat([model.flat_grads.clone(), dx.flatten()])
    h, numeric = 1e-6, torch.empty_like(analytic)
    flat_x = x.view(-1)
    for i, (buf, j) in enumerate([(model.flat_params, k) for k in range(model.flat_params.numel())]
                                 + [(flat_x, k) for k in range(flat_x.numel())]):
        old = buf[j].item()
        buf[j] = old + h
        up = loss()
        buf[j] = old - h
        down = loss()
        buf[j] = old
        numeric[i] = (up - down) / (2 * h)
    assert rel_err(analytic, numeric) <= 1e-6
    # and entrywise, CS231n's |a - n| / max(|a|, |n|) where the gradient is not tiny
    big = numeric.abs() > 1e-4
    assert big.sum() > numeric.numel() // 2
    assert ((analytic - numeric).abs() / torch.maximum(analytic.abs(), numeric.abs()))[big].max() <= 1e-5


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", ["cnn", "resblock_conv", "concat_channels", "batchnorm1d", "dropout"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_matches_torch_on_cuda(case, training):
    layers, in_shape = CASES[case]
    model = compare_with_torch(layers, in_shape, training, device="cuda")
    assert model.flat_params.is_cuda and model.flat_grads.is_cuda
