"""Every layer type exported to ONNX (api/export) and run by onnxruntime equals the engine's evaluation
forward to 1e-5 in float32: random inputs, random weights (every parameter and buffer moved from its
initial value, so a swapped scale and bias or a transposed matrix shows), two batch sizes."""
from __future__ import annotations

import typing

import numpy as np
import onnxruntime
import pytest
import torch

from api.export.onnx_graph import LAYERS, OUTPUT, UnsupportedLayer, to_onnx
from api.export.onnx_sequence import SEQUENCE_LAYERS
from engine import Model
from engine.spec import LayerSpec

lin = lambda n, **kw: {"type": "linear", "out_features": n, **kw}   # noqa: E731
V, T, D = 11, 6, 8
EMB = {"type": "embedding", "num_embeddings": V, "embedding_dim": D, "name": "emb"}

# (id, spec layers, input shape): each layer type at least once, in the shapes it takes
CASES = [
    ("linear", [lin(5)], (7,)),
    ("linear_no_bias_on_NTD", [lin(5, bias=False)], (3, 7)),
    ("conv2d", [{"type": "conv2d", "out_channels": 4, "kernel_size": [3, 2], "stride": [2, 1], "padding": 1}],
     (3, 9, 8)),
    ("conv1d", [{"type": "conv1d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 2,
                 "dilation": 2}], (3, 12)),
    ("maxpool2d", [{"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1}], (2, 9, 9)),
    ("avgpool2d", [{"type": "avgpool2d", "kernel_size": 2, "padding": 1}], (2, 7, 7)),
    ("flatten", [{"type": "flatten"}], (2, 3, 4)),
    ("flatten_middle", [{"type": "flatten", "start_dim": 2}], (2, 3, 4)),
    ("batchnorm1d", [{"type": "batchnorm"}], (5,)),
    ("batchnorm2d", [{"type": "batchnorm", "eps": 1e-3}], (3, 4, 4)),
    ("batchnorm_no_affine", [{"type": "batchnorm", "affine": False}], (3, 4, 4)),
    ("layernorm_NTD", [{"type": "layernorm"}], (T, D)),
    ("layernorm_no_affine", [{"type": "layernorm", "elementwise_affine": False, "eps": 1e-3}], (D,)),
    ("dropout", [{"type": "dropout", "p": 0.5}], (6,)),
    ("relu", [{"type": "relu"}], (6,)),
    ("leaky_relu", [{"type": "leaky_relu", "negative_slope": 0.2}], (6,)),
    ("sigmoid", [{"type": "sigmoid"}], (6,)),
    ("tanh", [{"type": "tanh"}], (6,)),
    ("gelu", [{"type": "gelu"}], (6,)),
    ("gelu_tanh", [{"type": "gelu", "approximate": "tanh"}], (6,)),
    ("softmax", [lin(4), {"type": "softmax"}], (6,)),
    ("standardize", [{"type": "standardize", "mean": [1.0, -2.0, 3.0], "std": [0.5, 2.0, 4.0]}], (3, 4, 4)),
    ("standardize_inverse", [{"type": "standardize", "inverse": True, "mean": [1.0, 2.0], "std": [3.0, 0.5]}],
     (2,)),
    ("add", [lin(5, name="a"), lin(5, name="b", inputs=["input"]),
             {"type": "add", "name": "sum", "inputs": ["a", "b", "input"]}], (5,)),
    ("concat", [{"type": "conv2d", "out_channels": 2, "kernel_size": 1, "name": "c"},
                {"type": "concat", "name": "cat", "inputs": ["c", "input"], "dim": 1}], (3, 4, 4)),
    ("embedding", [{**EMB, "padding_idx": 0}], (T,)),
    ("position_embedding", [EMB, {"type": "position_embedding", "max_len": 10}], (T,)),
    ("position_embedding_sinusoidal", [EMB, {"type": "position_embedding", "max_len": 10, "kind": "sinusoidal"}],
     (T,)),
    ("self_attention_causal", [EMB, {"type": "self_attention", "num_heads": 2}], (T,)),
    ("self_attention_full_no_bias", [EMB, {"type": "self_attention", "num_heads": 4, "causal": False,
                                           "bias": False}], (T,)),
    ("seq_pool_mean", [EMB, {"type": "seq_pool"}], (T,)),
    ("seq_pool_max", [EMB, {"type": "seq_pool", "mode": "max"}], (T,)),
    ("seq_pool_mean_padding", [EMB, {"type": "seq_pool", "name": "pool", "padding_idx": 0, "inputs": ["emb", "input"]}],
     (T,)),
    ("seq_pool_max_padding", [EMB, {"type": "seq_pool", "name": "pool", "mode": "max", "padding_idx": 0,
                                    "inputs": ["emb", "input"]}], (T,)),
    ("tied_gpt_block", [EMB, {"type": "position_embedding", "max_len": T},
                        {"type": "repeat", "name": "blocks", "times": 2, "layers": [
                            {"type": "layernorm", "name": "ln_1"},
                            {"type": "self_attention", "name": "attn", "num_heads": 2},
                            {"type": "add", "name": "res_1", "inputs": ["input", "attn"]},
                            {"type": "layernorm", "name": "ln_2"}, {"type": "linear", "name": "fc", "out_features": 16},
                            {"type": "gelu", "name": "act"}, {"type": "linear", "name": "proj", "out_features": D},
                            {"type": "add", "name": "res_2", "inputs": ["res_1", "proj"]}]},
                        {"type": "layernorm", "name": "ln_f"},
                        {"type": "linear", "name": "head", "out_features": V, "bias": False, "tie_to": "emb"}], (T,)),
]


def _random_state(model: Model, gen: torch.Generator) -> dict[str, torch.Tensor]:
    state = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            state[k] = v
        elif k.endswith(("running_var", ".std")):
            state[k] = torch.rand(v.shape, generator=gen) + 0.5            # positive
        elif k.endswith(("running_mean", ".mean")):
            state[k] = torch.randn(v.shape, generator=gen)
        else:                           # the initial values moved as training would: ones and zeros differ
            state[k] = v + 0.2 * torch.randn(v.shape, generator=gen)
    return state


def _inputs(model: Model, n: int, gen: torch.Generator) -> torch.Tensor:
    if model.input_dtype == torch.int64:
        ids = torch.randint(0, V, (n, *model.input_shape), generator=gen)
        ids[0, -3:] = 0                 # some padding at the end of one row
        ids[-1, :] = 0                  # a row of padding only (the only row when n = 1)
        return ids
    return torch.randn((n, *model.input_shape), generator=gen) * 2


@pytest.mark.parametrize("layers,input_shape", [pytest.param(layers, shape, id=name) for name, layers, shape in CASES])
def test_onnxruntime_equals_the_engine_forward(layers, input_shape):
    gen = torch.Generator().manual_seed(0)
    model = Model.from_spec({"layers": layers}, input_shape, seed=1)
    model.load_state_dict(_random_state(model, gen))
    exported = to_onnx({"layers": layers}, input_shape, model.state_dict())   # a tied table: one tensor, two names
    session = onnxruntime.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 5):                    # the batch dimension is dynamic
        x = _inputs(model, n, gen)
        with torch.no_grad():
            expected = model.forward(x, training=False).numpy()
        (got,) = session.run([OUTPUT], {"input": x.numpy()})
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_every_layer_type_has_an_onnx_form_and_a_case_here():
    types = {typing.get_args(cls.model_fields["type"].annotation)[0]
             for cls in typing.get_args(typing.get_args(LayerSpec)[0])}
    assert types == set(LAYERS) | set(SEQUENCE_LAYERS)
    tested = {layer["type"] for _, layers, _ in CASES for layer in layers} - {"repeat"}
    assert tested == types


def test_a_layer_with_no_onnx_form_is_named(monkeypatch):
    monkeypatch.delitem(LAYERS, "gelu")
    with pytest.raises(UnsupportedLayer, match=r"layers\[1\] \(gelu\) has no ONNX export"):
        to_onnx({"layers": [lin(3), {"type": "gelu"}]}, (4,), Model.from_spec({"layers": [lin(3)]}, (4,)).state_dict())


def test_a_tied_head_reads_the_embeddings_table_and_names_keep_the_state_dict():
    _, layers, shape = next(case for case in CASES if case[0] == "tied_gpt_block")
    model = Model.from_spec({"layers": layers}, shape)
    names = {init.name for init in to_onnx({"layers": layers}, shape, model.state_dict()).graph.initializer}
    assert "emb.weight" in names and "head.weight" not in names               # one table, not a copy
    assert {k for k in model.state_dict() if not k.startswith("head.")} <= names
