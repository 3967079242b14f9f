"""The Model's forward / backward contract: a backward answers the last training forward only,
an eval forward in between changes nothing, and layer outputs are observed on request."""
from __future__ import annotations

import pytest
import torch

from engine import Model, TrainStep, losses, optim
from engine.health import OutputStats, dead_fraction
from engine.model import BackwardError

DT = torch.float64

NETS = {
    "mlp": ({"layers": [{"type": "linear", "out_features": 8}, {"type": "batchnorm"}, {"type": "relu"},
                        {"type": "dropout", "p": 0.4}, {"type": "linear", "out_features": 8}, {"type": "relu"},
                        {"type": "linear", "out_features": 3}]}, (5,)),
    "cnn": ({"layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, {"type": "relu"},
                        {"type": "maxpool2d", "kernel_size": 2, "stride": 1}, {"type": "batchnorm"},
                        {"type": "avgpool2d", "kernel_size": 2}, {"type": "flatten"}, {"type": "dropout"},
                        {"type": "linear", "out_features": 2}, {"type": "softmax"}]}, (2, 6, 6)),
    "dag": ({"layers": [
        {"type": "linear", "out_features": 6, "name": "a", "inputs": ["input"]},
        {"type": "relu", "name": "r"},
        {"type": "layernorm", "name": "ln"},
        {"type": "add", "name": "res", "inputs": ["ln", "a"]},
        {"type": "concat", "name": "cat", "inputs": ["res", "input"]},
        {"type": "gelu", "name": "act"},
        {"type": "linear", "out_features": 2, "name": "head"}]}, (6,)),
}


def batches(shape, out_shape, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn((n, *shape), generator=g, dtype=DT), torch.randn((n, *shape), generator=g, dtype=DT),
            torch.randn((n, *out_shape), generator=g, dtype=DT))


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("between", ["forward", "predict", "observed"])
def test_an_eval_forward_between_forward_and_backward_changes_no_gradient(name, between):
    spec, shape = NETS[name]
    plain, probed = (Model.from_spec(spec, shape, seed=2, dtype=DT) for _ in range(2))
    x, other, dout = batches(shape, plain.output_shape)       # other: the same batch size, other rows

    plain.forward(x)
    dx = plain.backward(dout)

    probed.forward(x)
    if between == "forward":
        probed.forward(other, training=False)
    elif between == "predict":
        probed.predict(other, batch_size=2)
    else:
        probed.forward(other, training=False, observe=lambda key, layer, y: None)
    assert torch.equal(probed.backward(dout), dx)
    assert torch.equal(probed.flat_grads, plain.flat_grads)
    for k, v in plain.state_dict().items():                   # running stats, weights: untouched
        assert torch.equal(probed.state_dict()[k], v), k
    assert torch.equal(probed.generator.get_state(), plain.generator.get_state())   # no mask drawn


def test_an_eval_forward_keeps_no_activation():
    spec, shape = NETS["mlp"]
    model = Model.from_spec(spec, shape, dtype=DT)
    model.forward(torch.randn(4, *shape, dtype=DT), training=False)
    assert all(layer.cache is None for layer in model.layers)


def test_backward_twice_raises_naming_the_layer():
    spec, shape = NETS["mlp"]
    model = Model.from_spec(spec, shape, dtype=DT)
    x, _, dout = batches(shape, model.output_shape)
    model.forward(x)
    model.backward(dout)
    with pytest.raises(BackwardError, match=r"^layers\[6\] \(linear\): backward\(\) called twice for one forward"):
        model.backward(dout)
    with pytest.raises(BackwardError, match="called twice"):   # need_input_grad=False consumed it too
        model.forward(x)
        model.backward(dout, need_input_grad=False)
        model.backward(dout, need_input_grad=False)


def test_backward_without_a_training_forward_raises():
    spec, shape = NETS["dag"]
    model = Model.from_spec(spec, shape, dtype=DT)
    x, _, dout = batches(shape, model.output_shape)
    message = r"^layers\[6\] 'head' \(linear\): backward\(\) without a training forward to answer"
    with pytest.raises(BackwardError, match=message):
        model.backward(dout)
    model.forward(x, training=False)                          # keeps nothing
    with pytest.raises(BackwardError, match=message):
        model.backward(dout)
    model.forward(x, training=False, for_backward=True)       # unless asked to
    assert model.backward(dout).shape == x.shape


def test_a_training_forward_that_fails_midway_leaves_nothing_to_answer():
    model = Model.from_spec({"layers": [{"type": "linear", "out_features": 3}, {"type": "batchnorm"}]}, (4,),
                            dtype=DT)
    model.forward(torch.randn(5, 4, dtype=DT))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model.forward(torch.randn(1, 4, dtype=DT))            # batchnorm refuses a batch of one
    with pytest.raises(BackwardError, match="without a training forward"):
        model.backward(torch.randn(1, 3, dtype=DT))


def test_dout_of_another_shape_raises_and_the_forward_stays_answerable():
    spec, shape = NETS["cnn"]
    model = Model.from_spec(spec, shape, dtype=DT)
    x, _, dout = batches(shape, model.output_shape)
    model.forward(x)
    with pytest.raises(BackwardError, match=r"^layers\[8\] \(softmax\): dout has shape \(3, 2\) but the "
                                            r"training forward it answers output \(4, 2\)"):
        model.backward(dout[:3])
    assert model.backward(dout).shape == x.shape


def test_observe_sees_every_layer_output_in_order():
    spec, shape = NETS["dag"]
    model = Model.from_spec(spec, shape, seed=1, dtype=DT)
    x = torch.randn(3, *shape, dtype=DT)
    seen = []

    def observe(key, layer, y):
        seen.append((key, layer.kind, tuple(y.shape[1:]), y.clone()))

    out = model.forward(x, training=False, observe=observe)
    assert [(k, kind, s) for k, kind, s, _ in seen] == [
        (key, layer.kind, layer.out_shape) for key, layer in model.layer_items()]
    assert torch.equal(seen[-1][3], out)
    assert torch.equal(seen[1][3], torch.relu(seen[0][3]))    # relu of what linear 'a' output
    assert torch.equal(model.forward(x, training=False), out)  # observing changed nothing


def test_no_layer_writes_into_an_observed_output():
    spec, shape = NETS["cnn"]
    model = Model.from_spec(spec, shape, dtype=DT)
    x, _, dout = batches(shape, model.output_shape)
    kept, copies = {}, {}

    def observe(key, layer, y):
        kept[key], copies[key] = y, y.clone()

    model.forward(x, observe=observe)
    model.backward(dout)
    assert all(torch.equal(kept[k], copies[k]) for k in kept)


def test_output_stats_dead_fraction_through_a_train_step():
    spec, shape = NETS["mlp"]
    model = Model.from_spec(spec, shape, seed=3)
    model.parameters()["4.bias"].fill_(-100.0)                # the second relu dies
    step = TrainStep(model, losses.make("cross_entropy"), optim.make("sgd", model.parameters()))
    stats, outputs = OutputStats(), {}

    def both(key, layer, y):
        stats(key, layer, y)
        outputs[key] = y.clone()

    x, y = torch.randn(16, *shape), torch.randint(0, 3, (16,))
    step.forward_backward(x, y, observe=both)
    assert list(stats.dead_fraction) == ["2", "5"]
    assert stats.dead_fraction["5"].item() == 1.0
    assert stats.dead_fraction["2"].item() == dead_fraction(outputs["2"]).item() < 1.0
