"""engine.gradcheck: on random specs covering every layer type and every loss, the check passes and the
coordinates it reports agree with torch.autograd's gradients (chainrule.twin, same weights and dropout
masks); a backward whose dx is 1% off fails, upstream of it only; a kink is reported as one."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from chainrule.twin import twin
from engine import Model, losses
from engine.gradcheck import GradcheckTimeout, gradcheck
from engine.layers import _REGISTRY
from engine.layers.activation import Tanh

ACTIVATIONS = [{"type": "relu"}, {"type": "leaky_relu", "negative_slope": 0.1}, {"type": "sigmoid"},
               {"type": "tanh"}, {"type": "gelu"}, {"type": "gelu", "approximate": "tanh"}]


def vector_spec(rng: random.Random, out: int) -> list[dict]:
    layers = []
    for _ in range(rng.randint(1, 3)):
        layers.append({"type": "linear", "out_features": rng.randint(3, 7)})
        norm = rng.choice([None, "batchnorm", "layernorm"])
        if norm:
            layers.append({"type": norm})
        layers.append(dict(rng.choice(ACTIVATIONS)))
        if rng.random() < 0.4:
            layers.append({"type": "dropout", "p": 0.3})
    if rng.random() < 0.5:      # fixed per-feature scaling in front: buffers, so nothing of it is checked
        layers.insert(0, {"type": "standardize", "mean": [rng.uniform(-3, 3) for _ in range(5)],
                          "std": [rng.uniform(0.1, 10) for _ in range(5)]})
    return layers + [{"type": "linear", "out_features": out}]


def image_spec(rng: random.Random, out: int) -> list[dict]:
    return [{"type": "conv2d", "out_channels": rng.randint(2, 3), "kernel_size": 3, "padding": 1},
            {"type": "batchnorm"}, dict(rng.choice(ACTIVATIONS)),
            {"type": rng.choice(["maxpool2d", "avgpool2d"]), "kernel_size": 2},
            {"type": "conv2d", "out_channels": 2, "kernel_size": 2, "stride": 1}, dict(ACTIVATIONS[1]),
            {"type": "flatten"}, {"type": "linear", "out_features": out}]


def dag_spec(rng: random.Random, out: int) -> list[dict]:
    act = dict(rng.choice(ACTIVATIONS))
    return [{"type": "linear", "out_features": 6, "name": "a", "inputs": ["input"]},
            {**act, "name": "act", "inputs": ["a"]},
            {"type": "linear", "out_features": 6, "name": "b", "inputs": ["act"]},
            {"type": "add", "name": "res", "inputs": ["a", "b"]},
            {"type": "linear", "out_features": 3, "name": "c", "inputs": ["input"]},
            {"type": "concat", "name": "cat", "inputs": ["res", "c"]},
            {"type": "tanh", "name": "t", "inputs": ["cat"]},
            {"type": "linear", "out_features": out, "name": "head", "inputs": ["t"]}]


def sequence_spec(rng: random.Random, out: int) -> list[dict]:
    # on (C, L) = (4, 7); seq_pool pools the conv's (O, L') over O, all a gradient check asks of it
    return [{"type": "conv1d", "out_channels": 3, "kernel_size": 3, "padding": 1, "stride": rng.choice([1, 2]),
             "dilation": rng.choice([1, 2])}, dict(rng.choice(ACTIVATIONS)),
            {"type": "seq_pool", "mode": rng.choice(["mean", "max"])}, {"type": "linear", "out_features": out}]


def text_spec(rng: random.Random, out: int) -> list[dict]:
    # token ids (T,) = (5,) of 7: a one-block transformer encoder pooled to a classifier; a tied head
    # is covered by test_sequence_layers' gradient check of a GPT
    return [{"type": "embedding", "num_embeddings": 7, "embedding_dim": 4, "padding_idx": rng.choice([None, 0])},
            {"type": "position_embedding", "max_len": 5},
            {"type": "self_attention", "num_heads": rng.choice([1, 2]), "causal": rng.random() < 0.5},
            {"type": "layernorm"}, {"type": "seq_pool", "mode": rng.choice(["mean", "max"])},
            {"type": "linear", "out_features": out}]


LOSSES = ["cross_entropy", "mse", "l1", {"type": "huber", "delta": 0.5}, "bce_with_logits"]


def case(seed: int):
    """(spec, input_shape, loss, x, y): a random network on a random batch, in float64."""
    rng = random.Random(seed)
    loss = LOSSES[seed % len(LOSSES)]
    name = loss if isinstance(loss, str) else loss["type"]
    out = 1 if name == "bce_with_logits" else rng.randint(2, 4)
    kind = ["vector", "image", "dag", "sequence", "text"][(seed + seed // 5) % 5]   # each loss meets 3 kinds
    shape = {"image": (2, 6, 6), "sequence": (4, 7)}.get(kind, (5,))
    layers = {"vector": vector_spec, "image": image_spec, "dag": dag_spec, "sequence": sequence_spec,
              "text": text_spec}[kind](rng, out)
    if name == "mse" and kind in ("vector", "sequence"):
        layers.append({"type": "softmax"})                  # a softmax output, fitted to targets
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((4, *shape), generator=g, dtype=torch.float64) if kind != "text" else \
        torch.randint(0, 7, (4, *shape), generator=g)
    if name == "cross_entropy":
        y = torch.randint(0, out, (4,), generator=g)
    elif name == "bce_with_logits":
        y = torch.randint(0, 2, (4, 1), generator=g).double()
    else:
        y = torch.randn(4, out, generator=g, dtype=torch.float64)
    return {"layers": layers}, shape, loss, x, y


SEEDS = list(range(15))


def test_the_random_specs_cover_every_layer_type_and_loss():
    types = {layer["type"] for s in SEEDS for layer in case(s)[0]["layers"]}
    assert types == set(_REGISTRY)
    assert {str(case(s)[2]) for s in SEEDS} == {str(loss) for loss in LOSSES}


def autograd_gradients(spec, shape, loss, x, y, model: Model, seed: int) -> dict[str, torch.Tensor]:
    """Gradients of the same loss by torch.autograd on the engine's twin, same weights and dropout masks."""
    net = twin(spec, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    net.load_state_dict(model.state_dict(), strict=True)
    net.train()
    x = x.clone().requires_grad_(x.is_floating_point())     # token ids have no gradient
    out = net(x)
    name = loss if isinstance(loss, str) else loss["type"]
    value = {"cross_entropy": lambda: F.cross_entropy(out, y), "mse": lambda: F.mse_loss(out, y),
             "l1": lambda: F.l1_loss(out, y), "huber": lambda: F.huber_loss(out, y, delta=0.5),
             "bce_with_logits": lambda: F.binary_cross_entropy_with_logits(out, y)}[name]()
    value.backward()
    return {**{k: p.grad for k, p in net.named_parameters()}, **({"input": x.grad} if x.requires_grad else {})}


@pytest.mark.parametrize("seed", SEEDS)
def test_gradcheck_passes_and_agrees_with_autograd_on_random_specs(seed):
    spec, shape, loss, x, y = case(seed)
    model = Model.from_spec(spec, shape, seed=seed, dtype=torch.float64)
    report = gradcheck(model, losses.make(loss), x, y, coordinates=40, seed=seed)
    assert report["passed"], report
    reference = autograd_gradients(spec, shape, loss, x, y, model, seed)
    entries = [t for layer in report["layers"] for t in layer["tensors"]] + [report["input"]] * (x.is_floating_point())
    assert {e["name"] for e in entries} == set(reference)
    for entry in entries:
        assert entry["checked"] == min(40, entry["of"]) and entry["status"] in ("passed", "kink")
        worst = entry["worst"]
        if worst is None:                            # every coordinate at a kink
            continue
        exact = float(reference[entry["name"]][tuple(worst["index"])])
        assert worst["analytic"] == pytest.approx(exact, rel=1e-9, abs=1e-12), entry["name"]
        assert worst["numeric"] == pytest.approx(exact, rel=1e-5, abs=1e-8), entry["name"]


def test_a_backward_with_dx_scaled_by_1_01_fails_upstream_of_it():
    class WrongTanh(Tanh):
        def backward(self, dy):
            return 1.01 * super().backward(dy)

    spec = {"layers": [{"type": "linear", "out_features": 8}, {"type": "relu"},
                       {"type": "linear", "out_features": 8}, {"type": "tanh"},
                       {"type": "linear", "out_features": 3}]}
    model = Model.from_spec(spec, (5,), seed=1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g)
    assert gradcheck(model, losses.make("cross_entropy"), x, y)["passed"]
    model.layers[3].__class__ = WrongTanh
    report = gradcheck(model, losses.make("cross_entropy"), x, y)
    status = {layer["key"]: layer["status"] for layer in report["layers"]}
    assert not report["passed"] and status == {"0": "failed", "2": "failed", "4": "passed"}
    assert report["input"]["status"] == "failed"
    assert report["layers"][1]["max_relative_error"] == pytest.approx(0.01 / 1.01, rel=1e-3)
    assert report["layers"][2]["max_relative_error"] < 1e-7          # downstream of it: right


def test_relu_at_zero_and_max_pool_ties_are_kinks_not_failures():
    spec = {"layers": [{"type": "linear", "out_features": 4}, {"type": "relu"}, {"type": "linear", "out_features": 2}]}
    model = Model.from_spec(spec, (3,), seed=1, dtype=torch.float64)
    model.parameters()["0.weight"].zero_()
    model.parameters()["0.bias"].zero_()                   # every pre-activation is exactly 0
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    report = gradcheck(model, losses.make("cross_entropy"), x, torch.tensor([0, 1, 0, 1]))
    assert report["passed"] and report["layers"][0]["status"] == "kink" and report["layers"][0]["kinks"] > 0
    pool = Model.from_spec({"layers": [{"type": "maxpool2d", "kernel_size": 2}, {"type": "flatten"},
                                       {"type": "linear", "out_features": 2}]}, (1, 4, 4), seed=1, dtype=torch.float64)
    report = gradcheck(pool, losses.make("cross_entropy"), torch.ones(2, 1, 4, 4, dtype=torch.float64),
                       torch.tensor([0, 1]))
    assert report["passed"] and report["input"]["status"] == "kink" and report["input"]["kinks"] == 32


def test_a_float32_model_is_checked_in_float64_and_left_as_it_was():
    spec, shape, loss, x, y = case(1)
    model = Model.from_spec(spec, shape, seed=1)
    before = model.state_dict()
    assert gradcheck(model, losses.make(loss), x.float(), y)["passed"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_check_past_its_time_limit_is_refused_before_it_runs():
    spec, shape, loss, x, y = case(0)
    model = Model.from_spec(spec, shape, seed=0, dtype=torch.float64)
    with pytest.raises(GradcheckTimeout, match="over the limit of 1e-06 s"):
        gradcheck(model, losses.make(loss), x, y, time_limit_s=1e-6)
