"""chainrule.twin: the torch.nn module of a spec loads the Model's state_dict strictly and computes the
same function; with a seeded generator its dropout masks are the engine's. (test_layers and
test_networks compare every layer and whole training runs through it.)"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import engine
from chainrule.twin import Add, twin
from engine import Model, SpecError
from test_layers import CASES, DAG_CASES

DT = torch.float64


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_names_shapes_and_order_are_the_models(case):
    layers, in_shape = CASES[case]
    spec = {"layers": layers}
    model, net = Model.from_spec(spec, in_shape), twin(spec, in_shape)
    ours, theirs = model.state_dict(), net.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape and ours[k].dtype == theirs[k].dtype for k in ours)
    net.load_state_dict(ours, strict=True)
    assert isinstance(net, nn.Sequential) == (case not in DAG_CASES)


def test_the_docstring_example():
    spec = {"layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "relu"},
                       {"type": "maxpool2d", "kernel_size": 2}, {"type": "flatten"},
                       {"type": "dropout", "p": 0.3}, {"type": "linear", "out_features": 10}]}
    model = engine.Model.from_spec(spec, (1, 28, 28), seed=0)
    net = twin(spec, (1, 28, 28))
    net.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(net.eval()(x), model.predict(x))


def test_a_dag_twin_follows_the_graph_with_layers_named_by_key():
    layers, in_shape = DAG_CASES["resblock_conv"]
    spec = {"layers": layers}
    model = Model.from_spec(spec, in_shape, seed=4, dtype=DT)
    net = twin(spec, in_shape, dtype=DT)
    net.load_state_dict(model.state_dict(), strict=True)
    assert [name for name, _ in net.named_children()] == model.keys
    assert isinstance(net.get_submodule("bn"), nn.BatchNorm2d) and isinstance(net.get_submodule("res"), Add)
    x = torch.randn(5, *in_shape, dtype=DT)
    with torch.no_grad():
        assert torch.allclose(net.train()(x), model.forward(x.clone(), training=True), rtol=0, atol=1e-12)


@pytest.mark.parametrize("p", [0.3, 0.0])
def test_a_seeded_generator_gives_the_engines_dropout_masks(p):
    spec = {"layers": [{"type": "dropout", "p": p}, {"type": "tanh"}, {"type": "dropout", "p": 0.5}]}
    model = Model.from_spec(spec, (40,), seed=11, dtype=DT)
    net = twin(spec, (40,), generator=torch.Generator().manual_seed(11), dtype=DT)
    x = torch.randn(6, 40, dtype=DT)
    for _ in range(3):                                        # fresh masks each forward, from one stream
        assert torch.equal(net.train()(x), model.forward(x, training=True))
    assert torch.equal(net.eval()(x), model.forward(x, training=False))


def test_without_a_generator_dropout_is_torchs():
    net = twin({"layers": [{"type": "dropout", "p": 0.2}]}, (3,))
    assert type(net[0]) is nn.Dropout and net[0].p == 0.2


def test_dtype_and_device():
    net = twin({"layers": [{"type": "linear", "out_features": 2}, {"type": "batchnorm"}]}, (3,), dtype=DT)
    assert net[0].weight.dtype == DT and net[1].num_batches_tracked.dtype == torch.long
    assert net[0].weight.device.type == "cpu"


def test_a_layer_named_like_a_module_attribute_is_refused_naming_it():
    spec = {"layers": [{"type": "linear", "out_features": 2, "name": "eval", "inputs": ["input"]},
                       {"type": "relu", "name": "act"}]}
    Model.from_spec(spec, (3,))                               # the engine has no such limit
    with pytest.raises(ValueError, match=r"^layers\[0\] 'eval' \(linear\): the name 'eval' is an attribute"):
        twin(spec, (3,))


def test_a_spec_that_does_not_fit_is_a_spec_error():
    with pytest.raises(SpecError, match=r"layers\[0\] \(conv2d\)"):
        twin({"layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": 3}]}, (5,))
