"""The sequence layers against autograd through their torch.nn twins, in float64: embedding (padding_idx,
repeated ids), position embeddings, multi-head self-attention (the causal mask, dropout with the
engine's mask), linear / layernorm / activations on (N, T, D), a tied head, and `repeat`.

Every output, parameter gradient and (where the input is real) dx within 1e-10 relative error."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor

from chainrule.twin import twin
from engine import Model
from engine.planning import SpecError
from engine.spec import ModelSpec
from sequence_support import GPT_BLOCK, gpt, layer

F64 = torch.float64
TOL = 1e-10


def rel_err(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != reference {tuple(b.shape)}"
    return (a.double() - b.double()).abs().max().item() / max(b.double().abs().max().item(), 1e-300)


def randomized(spec, input_shape, seed=0) -> Model:
    """A float64 Model with random parameters (a tied weight stays its table)."""
    model = Model.from_spec(spec, input_shape, seed=seed, dtype=F64)
    g = torch.Generator().manual_seed(seed + 1)
    for p in model.parameters().values():
        p.copy_(torch.randn(p.shape, generator=g, dtype=F64))
    return model


def check_against_twin(spec, input_shape, x: Tensor, *, seed=0, training=True):
    """Forward and backward of the Model and of its twin (same weights, same dropout masks)."""
    model = randomized(spec, input_shape, seed)
    net = twin(spec, input_shape, dtype=F64, generator=torch.Generator().manual_seed(seed))
    net.load_state_dict(model.state_dict(), strict=True)
    net.train(training)
    real = x.is_floating_point()
    xt = x.clone().requires_grad_(real)
    y = model.forward(x, training=training, for_backward=True)
    y_ref = net(xt)
    assert rel_err(y, y_ref) < TOL
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 2), dtype=F64)
    dx = model.backward(dy)
    (y_ref * dy).sum().backward()
    reference = dict(net.named_parameters())
    assert set(model.grads()) == set(reference)          # a tied weight is one parameter in both
    for name, grad in model.grads().items():
        assert rel_err(grad, reference[name].grad) < TOL, name
    if real:
        assert rel_err(dx, xt.grad) < TOL
    else:
        assert dx is None                                 # ids carry no gradient
    return model, net


def ids(n, t, vocab, seed=0) -> Tensor:
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def test_embedding_scatter_adds_repeated_ids_and_skips_padding():
    x = ids(4, 9, 5)                                      # 5 ids in 36 positions: every id repeats
    x[0, :3] = 2                                          # and the padding id appears
    spec = {"layers": [layer("embedding", num_embeddings=5, embedding_dim=6, padding_idx=2)]}
    model, _ = check_against_twin(spec, (9,), x)
    model.forward(x)
    model.backward(torch.ones(4, 9, 6, dtype=F64))
    assert model.grads()["0.weight"][2].abs().max() == 0
    assert torch.equal(model.grads()["0.weight"][0], torch.full((6,), float((x == 0).sum()), dtype=F64))


def test_embedding_init_is_torch_normal_with_the_padding_row_zero():
    model = Model.from_spec({"layers": [layer("embedding", num_embeddings=500, embedding_dim=40, padding_idx=0)]},
                            (3,), dtype=F64)
    table = model.parameters()["0.weight"]
    assert table[0].abs().max() == 0
    assert abs(float(table[1:].std()) - 1.0) < 0.02
    small = Model.from_spec({"layers": [layer("embedding", num_embeddings=500, embedding_dim=40, init_std=0.02)]},
                            (3,), dtype=F64)
    assert abs(float(small.parameters()["0.weight"].std()) - 0.02) < 0.001


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_position_embedding(kind):
    spec = {"layers": [layer("position_embedding", max_len=12, kind=kind)]}
    x = torch.randn(3, 7, 8, dtype=F64)
    check_against_twin(spec, (7, 8), x)


def test_a_learned_position_table_gets_no_gradient_past_the_sequence():
    spec = {"layers": [layer("embedding", num_embeddings=7, embedding_dim=4), layer("position_embedding", max_len=10)]}
    model = randomized(spec, (6,))
    y = model.forward(ids(2, 4, 7))                        # a shorter sequence than planned: generation
    model.backward(torch.ones_like(y))
    grad = model.grads()["1.weight"]
    assert torch.equal(grad[:4], torch.full((4, 4), 2.0, dtype=F64)) and grad[4:].abs().max() == 0


@pytest.mark.parametrize("heads,causal,bias", [(1, True, True), (2, True, False), (4, False, True)])
def test_self_attention(heads, causal, bias):
    spec = {"layers": [layer("self_attention", num_heads=heads, causal=causal, bias=bias)]}
    check_against_twin(spec, (6, 8), torch.randn(3, 6, 8, dtype=F64))


def test_the_causal_mask_keeps_the_future_out():
    """Changing the last position changes no earlier output, and no gradient flows to the future."""
    spec = {"layers": [layer("self_attention", num_heads=2)]}
    model = randomized(spec, (5, 4))
    x = torch.randn(1, 5, 4, dtype=F64)
    y = model.predict(x)
    x2 = x.clone()
    x2[0, 4] += 1.0
    assert torch.equal(model.predict(x2)[0, :4], y[0, :4])
    model.forward(x)
    dy = torch.zeros(1, 5, 4, dtype=F64)
    dy[0, 1] = 1.0                                        # only position 1's output matters
    dx = model.backward(dy)
    assert dx[0, 2:].abs().max() == 0 and dx[0, :2].abs().max() > 0


def test_attention_dropout_with_the_engines_mask():
    spec = {"layers": [layer("self_attention", num_heads=2, dropout=0.3)]}
    check_against_twin(spec, (5, 8), torch.randn(4, 5, 8, dtype=F64), seed=3)


def test_attention_rejects_heads_that_do_not_divide_the_width():
    with pytest.raises(SpecError, match="embed_dim 6 is not divisible by num_heads 4"):
        Model.from_spec({"layers": [layer("self_attention", num_heads=4)]}, (3, 6))


@pytest.mark.parametrize("kinds", [["linear"], ["layernorm"], ["gelu"], ["relu"], ["tanh"], ["dropout"], ["softmax"]])
def test_last_dim_layers_on_sequences(kinds):
    """linear, layernorm, activations and dropout act on the last dim of (N, T, D), as torch.nn does."""
    extra = {"linear": {"out_features": 5}, "dropout": {"p": 0.4}}
    spec = {"layers": [layer(k, **extra.get(k, {})) for k in kinds]}
    check_against_twin(spec, (4, 6), torch.randn(3, 4, 6, dtype=F64), seed=5)


def test_a_gpt_with_a_tied_head_equals_its_twin():
    model, net = check_against_twin(gpt(), (6,), ids(3, 6, 11))
    assert net.lm_head.weight is net.wte.weight
    state = model.state_dict()
    assert torch.equal(state["lm_head.weight"], state["wte.weight"])
    assert "lm_head.weight" not in model.parameters()    # the optimizer sees the table once


def test_a_gpt_with_attention_dropout_equals_its_twin():
    check_against_twin(gpt(dropout=0.2), (6,), ids(3, 6, 11), seed=4)


def test_repeat_names_the_blocks_and_wires_the_residuals():
    spec = ModelSpec.model_validate(gpt(blocks=3))
    keys = spec.keys()
    assert keys[:2] == ["wte", "wpe"] and keys[-2:] == ["ln_f", "lm_head"]
    assert keys[2:10] == [f"blocks.0.{b['name']}" for b in GPT_BLOCK]
    by_name = {layer.name: layer for layer in spec.layers}
    assert by_name["blocks.0.ln_1"].inputs == ["wpe"]                      # the first block reads the layer before
    assert by_name["blocks.1.res_1"].inputs == ["blocks.0.res_2", "blocks.1.attn"]   # `input`: the block's input
    assert by_name["ln_f"].inputs is None and spec.input_keys()[-2] == ["blocks.2.res_2"]
    names = list(Model.from_spec(spec, (6,)).state_dict())
    assert "blocks.2.attn.in_proj_weight" in names and "blocks.1.fc.bias" in names


def test_a_layer_after_a_repeat_may_name_it():
    spec = ModelSpec.model_validate({"layers": [
        layer("linear", name="inp", out_features=4),
        {"type": "repeat", "name": "body", "times": 2, "layers": [layer("linear", out_features=4), layer("tanh")]},
        layer("add", name="skip", inputs=["inp", "body"]),
    ]})
    assert spec.layers[-1].inputs == ["inp", "body.1.1"]


@pytest.mark.parametrize("bad,message", [
    ({"type": "repeat", "name": "b", "times": 2, "layers": [layer("add", inputs=["input", "nope"])]},
     "input 'nope' is not an earlier layer of the block"),
    ({"type": "repeat", "name": "b", "times": 0, "layers": [layer("relu")]}, "times"),
    ({"type": "repeat", "name": "b", "times": 2, "layers": [layer("relu", name="a"), layer("tanh", name="a")]},
     "name 'a' is already used in the block"),
    ({"type": "repeat", "name": "b", "times": 2, "layers": [layer("tanh", name="c.d.e.f.g.h.i.j")]},   # 8 parts
     r"layers\[0\] becomes 'b.0.c.d.e.f.g.h.i.j', not a valid layer name: at most 8 dot-separated parts"),
])
def test_repeat_errors_name_the_repeat_and_the_layer(bad, message):
    with pytest.raises(ValidationError, match=message):
        ModelSpec.model_validate({"layers": [layer("linear", out_features=3), bad]})


@pytest.mark.parametrize("head,message", [
    (layer("linear", out_features=11, tie_to="nope"), "tie_to .nope. is not the name of an earlier embedding"),
    (layer("linear", out_features=12, tie_to="wte"), r"tie_to 'wte': this weight would be \(12, 8\)"),
])
def test_tie_errors(head, message):
    spec = {"layers": [layer("embedding", name="wte", num_embeddings=11, embedding_dim=8), {**head, "name": "head"}]}
    with pytest.raises((ValidationError, SpecError), match=message):
        Model.from_spec(spec, (4,))


def test_ids_outside_the_table_are_named():
    model = Model.from_spec({"layers": [layer("embedding", num_embeddings=5, embedding_dim=2)]}, (3,))
    with pytest.raises(ValueError, match=r"token id 7, not a row of layers\[0\] \(embedding\); valid ids: 0..4"):
        model.check_ids(torch.tensor([[1, 7, 0]]))
    assert model.input_dtype == torch.int64


def test_the_gradient_check_passes_on_a_gpt_with_a_padded_tied_table():
    """engine.gradcheck on the user's GPT: the tied table checked once, its padding row left out."""
    from engine import losses
    from engine.gradcheck import gradcheck
    spec = gpt()
    spec["layers"][0]["padding_idx"] = 0
    model = Model.from_spec(spec, (6,), dtype=F64, seed=2)
    report = gradcheck(model, losses.make("cross_entropy"), ids(2, 6, 11), ids(2, 6, 11, seed=1), coordinates=24)
    assert report["passed"], report
    table = next(t for layer in report["layers"] for t in layer["tensors"] if t["name"] == "wte.weight")
    assert table["of"] == 10 * 8                            # 11 rows less the padding row
    assert not any(t["name"] == "lm_head.weight" for layer in report["layers"] for t in layer["tensors"])
