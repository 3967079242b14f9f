"""conv1d and seq_pool against torch autograd, in float64: output, dx and every parameter gradient to a
relative error of 1e-10 (test_layers' standard), through Model.from_spec and chainrule.twin where the
spec can be built, and at the layer level for seq_pool's padding path, whose ids come from an embedding."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from chainrule.twin import SeqPool as TwinSeqPool
from chainrule.twin import twin
from engine import Model, plan
from engine.layers import _REGISTRY, ShapeError, layer_class
from engine.memory import estimate
from engine.planning import SpecError
from engine.spec import ModelSpec, SeqPool
from test_layers import F64, TOL, compare_with_torch, lin, randomize_state, rel_err, t


def conv1d(c, k, **kw):
    return t("conv1d", out_channels=c, kernel_size=k, **kw)


# ----------------------------------------------------------------------------- conv1d
CONV1D_CASES = {
    "plain": ([conv1d(4, 3)], (3, 8)),
    "kernel_1_nobias": ([conv1d(2, 1, bias=False)], (3, 5)),
    "stride_pad": ([conv1d(3, 3, stride=2, padding=1)], (2, 9)),
    # (10 - 3) % 2 = 1: the last input position is in no window, the transposed conv's output_padding
    "floor_drops_the_last": ([conv1d(3, 3, stride=2)], (2, 10)),
    "dilation_stride_pad": ([conv1d(2, 3, stride=3, padding=2, dilation=2)], (3, 13)),
    "dilation_no_pad": ([conv1d(3, 2, dilation=3)], (2, 7)),
    "textcnn": ([conv1d(5, 3, padding=1), t("relu"), t("seq_pool", mode="max"), lin(2)], (4, 9)),
    # (a bias before a layernorm over L has a gradient of exactly 0, which makes a relative error noise)
    "conv_stack": ([conv1d(4, 3, padding=1, bias=False), t("layernorm"), t("tanh"), conv1d(3, 2, stride=2),
                    t("flatten"), lin(2)], (2, 8)),
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", list(CONV1D_CASES))
def test_conv1d_matches_torch(case, training):
    layers, in_shape = CONV1D_CASES[case]
    model = compare_with_torch(layers, in_shape, training)
    assert all(layer.cache is None for layer in model.layers)


def test_conv1d_output_length_is_torchs():
    # L' = (L + 2p - d(k - 1) - 1) // s + 1
    p = plan({"layers": [conv1d(2, 3, stride=3, padding=2, dilation=2)]}, (3, 13))
    assert p.output_shape == (2, (13 + 4 - 4 - 1) // 3 + 1) == (2, 5)


def test_conv1d_without_input_gradient_skips_dx_and_keeps_the_weight_gradient():
    layers, in_shape = CONV1D_CASES["stride_pad"]
    model = Model.from_spec({"layers": layers}, in_shape, dtype=F64)
    g = torch.Generator().manual_seed(3)
    randomize_state(model, g)
    x, dy = torch.randn(4, *in_shape, generator=g, dtype=F64), torch.randn(4, 3, 5, generator=g, dtype=F64)
    model.forward(x)
    full = model.backward(dy)
    grads = {k: v.clone() for k, v in model.grads().items()}
    model.forward(x)
    assert full is not None and model.backward(dy, need_input_grad=False) is None
    assert all(torch.equal(grads[k], v) for k, v in model.grads().items())


@pytest.mark.parametrize("init,std", [("he_normal", 1 / math.sqrt(32 * 5)), ("xavier_normal", math.sqrt(2 / (64 * 5))),
                                      ("torch_default", 1 / math.sqrt(3 * 32 * 5))])
def test_conv1d_init_uses_the_fans_of_its_kernel(init, std):
    # fan_in = C * k = 160, fan_out = O * k = 160, gain 1 (no activation follows); U(-b, b) has std b / sqrt(3)
    model = Model.from_spec({"layers": [conv1d(32, 5, init=init)]}, (32, 20), seed=1, dtype=F64)
    weight = model.parameters()["0.weight"]
    assert weight.shape == (32, 32, 5)
    assert weight.std().item() == pytest.approx(std, rel=0.03)


def test_conv1d_feeding_relu_defaults_to_he():
    model = Model.from_spec({"layers": [conv1d(64, 5), t("relu")]}, (32, 20), seed=2, dtype=F64)
    assert model.parameters()["0.weight"].std().item() == pytest.approx(math.sqrt(2 / (32 * 5)), rel=0.03)


@pytest.mark.parametrize("layer,in_shape,message", [
    (conv1d(2, 5), (3, 4), "kernel 5 .* longer than the padded input 4"),
    (conv1d(2, 3, dilation=3), (3, 6), "spans 7"),
    (conv1d(2, 3), (3, 4, 4), r"expects \(N, C, L\) input"),
])
def test_conv1d_shape_errors_name_the_sizes(layer, in_shape, message):
    with pytest.raises(SpecError, match=message):
        plan({"layers": [layer]}, in_shape)


def test_conv1d_memory_counts_its_unfolded_input():
    e = estimate(plan({"layers": [conv1d(2, 3, padding=1)]}, (3, 8)), 4)
    unfolded = 3 * 3 * 8
    # input batch, the kept output, backward's dy + dx + unfolded input, the loss's three outputs
    assert e.activation_bytes == (3 * 8) * 4 + (2 * 8) * 4 + (2 * 8 + 3 * 8 + unfolded) * 4 + 3 * 2 * 8 * 4


# ----------------------------------------------------------------------------- seq_pool, no padding
def test_seq_pool_max_with_ties_routes_each_gradient_to_one_position():
    # values in {0, 1, 2}: most (n, d) columns have tied maxima; autograd's max sends dy to one of them
    layers, in_shape = [t("seq_pool", mode="max")], (6, 5)
    model = Model.from_spec({"layers": layers}, in_shape, dtype=F64)
    x = torch.randint(0, 3, (4, *in_shape), generator=torch.Generator().manual_seed(0)).to(F64)
    reference = x.clone().requires_grad_(True)
    TwinSeqPool("max", None)(reference).backward(torch.ones(4, 5, dtype=F64))
    model.forward(x)
    dx = model.backward(torch.ones(4, 5, dtype=F64))
    assert torch.equal(dx, reference.grad)
    assert (dx != 0).sum() == 4 * 5, "a tie split its gradient"


def test_seq_pool_mean_is_the_mean_over_time():
    model = Model.from_spec({"layers": [t("seq_pool")]}, (3, 2), dtype=F64)
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [8.0, 0.0]]], dtype=F64)
    assert torch.equal(model.forward(x), torch.tensor([[4.0, 2.0]], dtype=F64))
    assert torch.equal(model.backward(torch.tensor([[3.0, 6.0]], dtype=F64)),
                       torch.tensor([[[1.0, 2.0]] * 3], dtype=F64))


# ----------------------------------------------------------------------------- seq_pool, padding
def reference_pool(x: Tensor, ids: Tensor, mode: str, padding_idx: int) -> Tensor:
    """Row by row over the kept positions: an independent formula for autograd to differentiate."""
    rows = []
    for n in range(x.shape[0]):
        kept = x[n, ids[n] != padding_idx]                                # (T_n, D)
        if kept.shape[0] == 0:
            rows.append(x[n, 0] * 0)
        else:
            rows.append(kept.mean(0) if mode == "mean" else kept.max(0).values)
    return torch.stack(rows)


PAD_IDS = {  # (N, T) = (4, 6); row 2 is all padding, row 3 has none
    0: torch.tensor([[5, 3, 0, 0, 0, 0], [1, 0, 2, 0, 7, 7], [0, 0, 0, 0, 0, 0], [4, 4, 1, 2, 3, 9]]),
    3: torch.tensor([[5, 3, 3, 1, 3, 0], [3, 3, 3, 3, 3, 2], [3, 3, 3, 3, 3, 3], [0, 1, 2, 4, 5, 6]]),
}


def padded_layer(mode: str, padding_idx: int):
    spec = SeqPool(type="seq_pool", mode=mode, padding_idx=padding_idx)
    layer = layer_class("seq_pool")(spec, [(6, 5), (6,)])
    layer.bind({}, {}, {})
    return layer


@pytest.mark.parametrize("padding_idx", list(PAD_IDS))
@pytest.mark.parametrize("mode", ["mean", "max"])
def test_seq_pool_with_padding_matches_autograd(mode, padding_idx):
    ids = PAD_IDS[padding_idx]
    g = torch.Generator().manual_seed(padding_idx)
    x = torch.randn(4, 6, 5, generator=g, dtype=F64)
    x[ids == padding_idx] += 100                 # padding would win every max, and move every mean
    dy = torch.randn(4, 5, generator=g, dtype=F64)
    reference = x.clone().requires_grad_(True)
    y_ref = reference_pool(reference, ids, mode, padding_idx)
    y_ref.backward(dy)

    layer = padded_layer(mode, padding_idx)
    assert layer.merge and layer.out_shape == (5,)
    x_before, dy_before = x.clone(), dy.clone()
    y = layer.forward([x, ids], training=True)
    assert rel_err(y, y_ref) <= TOL, "output"
    dx, d_ids = layer.backward(dy)
    assert d_ids is None, "integer ids have no gradient"
    assert rel_err(dx, reference.grad) <= TOL, "dx"
    assert torch.equal(y[2], torch.zeros(5, dtype=F64)) and torch.equal(dx[2], torch.zeros(6, 5, dtype=F64))
    assert torch.equal(dx[ids == padding_idx], torch.zeros_like(dx[ids == padding_idx]))
    assert torch.equal(x, x_before) and torch.equal(dy, dy_before), "the layer wrote into x or dy"
    assert layer.cache is None
    # the twin's module (what a twin of embedding -> seq_pool runs) computes the same, gradients included
    twin_x = x.clone().requires_grad_(True)
    y_twin = TwinSeqPool(mode, padding_idx)(twin_x, ids)
    y_twin.backward(dy)
    assert rel_err(y_twin, y_ref) <= TOL and rel_err(twin_x.grad, reference.grad) <= TOL


def test_seq_pool_max_with_padding_and_ties_picks_one_kept_position():
    ids = PAD_IDS[0]
    x = torch.ones(4, 6, 5, dtype=F64)           # every kept position ties
    layer = padded_layer("max", 0)
    layer.forward([x, ids], training=True)
    dx, _ = layer.backward(torch.ones(4, 5, dtype=F64))
    winners = dx.sum(2) / 5                      # (N, T): which position took the column's gradient
    assert torch.equal(winners, torch.tensor([[1.0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0] * 6,
                                              [1, 0, 0, 0, 0, 0]], dtype=F64))


def test_seq_pool_ids_of_another_length_are_a_shape_error():
    spec = SeqPool(type="seq_pool", mode="mean", padding_idx=0)
    with pytest.raises(ShapeError, match=r"token ids \(N, T\) of the same T"):
        layer_class("seq_pool")(spec, [(6, 5), (5,)])
    with pytest.raises(ShapeError, match=r"expects \(N, T, D\) features"):
        layer_class("seq_pool")(SeqPool(type="seq_pool"), [(6,)])


@pytest.mark.parametrize("layers,message", [
    ([lin(4, name="a", inputs=["input"]), t("seq_pool", name="p", inputs=["a"], padding_idx=0)],
     r"with padding_idx it takes exactly 2 inputs, the features .* got \['a'\]"),
    ([lin(4, name="a", inputs=["input"]), t("seq_pool", name="p", inputs=["input", "a"], padding_idx=0)],
     r"the model input's token ids"),
    ([t("seq_pool", padding_idx=0)], "with padding_idx it takes exactly 2 inputs"),
    ([lin(4, name="a", inputs=["input"]), t("seq_pool", name="p", inputs=["a", "input"])],
     "takes exactly 1 input, got .*; seq_pool reads token ids as a second input only with padding_idx"),
])
def test_seq_pool_inputs_are_checked_by_the_spec(layers, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec.model_validate({"layers": layers})


def test_seq_pool_memory_counts_what_each_mode_keeps():
    def kept(mode):
        return estimate(plan({"layers": [t("seq_pool", mode=mode), lin(2)]}, (6, 5)), 4).inference_bytes
    # the output (5) and the mean's position weights (6), or the max's int64 winners (5 x 8 bytes)
    assert kept("max") - kept("mean") == 5 * 8 - 6 * 4


# ----------------------------------------------------------------------------- with an embedding
@pytest.mark.skipif("embedding" not in _REGISTRY, reason="the embedding layer is not in this tree yet")
@pytest.mark.parametrize("mode", ["mean", "max"])
def test_embedding_seq_pool_linear_matches_its_twin(mode):
    """ids (N, T) -> embedding -> seq_pool over the non-padding ids -> linear, through Model.from_spec."""
    spec = {"layers": [t("embedding", name="emb", inputs=["input"], num_embeddings=10, embedding_dim=5,
                         padding_idx=0),
                       t("seq_pool", name="pool", inputs=["emb", "input"], mode=mode, padding_idx=0),
                       lin(3, name="head")]}
    model = Model.from_spec(spec, (6,), seed=0, dtype=F64)
    g = torch.Generator().manual_seed(5)
    state = randomize_state(model, g)           # the padding row too: were it pooled, the output would move
    net = twin(spec, (6,), dtype=F64)
    net.load_state_dict(state, strict=True)
    ids = PAD_IDS[0]
    y_ref = net(ids)
    dy = torch.randn(y_ref.shape, generator=g, dtype=F64)
    y_ref.backward(dy)

    y = model.forward(ids, training=True)
    assert rel_err(y, y_ref) <= TOL, "output"
    assert model.backward(dy) is None, "integer ids have no gradient"
    params = dict(net.named_parameters())
    assert set(model.grads()) == set(params)
    for k, grad in model.grads().items():
        assert rel_err(grad, params[k].grad) <= TOL, k
    assert torch.equal(y[2], model.parameters()["head.bias"]), "an all-padding row pools to 0"
