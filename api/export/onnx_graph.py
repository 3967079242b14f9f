"""A trained network as an ONNX graph, built straight from its spec and state_dict with onnx.helper.

    model = to_onnx(spec, input_shape, state)     # onnx.ModelProto, opset 17, float32
    onnxruntime.InferenceSession(model.SerializeToString()).run(["output"], {"input": x})

One input `input`: (batch, *input_shape) float32, or int64 token ids (batch, T) when an embedding reads
it; one output `output`: (batch, *output_shape). `batch` is a dynamic dimension; the rest are the
job's. Each layer becomes the few ONNX operators of its evaluation-mode forward (dropout is the
identity, batchnorm reads its running statistics); its tensors are initializers under their
state_dict names. Sequence layers are in onnx_sequence.py. A layer type with no entry in LAYERS is
UnsupportedLayer, which names it (the API answers 409).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor

from engine.layers.flatten import Flatten
from engine.planning import INPUT_INDEX, plan
from engine.shapes import Shape
from engine.spec import ModelSpec, pair

OPSET = 17               # LayerNormalization's first opset; onnxruntime and most runtimes take it
IR_VERSION = 8           # the file format opset 17 needs, readable by runtimes older than this onnx package
INPUT, OUTPUT, BATCH = "input", "output", "batch"


class UnsupportedLayer(ValueError):
    """A layer the exporter has no ONNX form for; the message names it."""


class Graph:
    """The nodes and initializers being written; `name` makes a tensor name unique."""

    def __init__(self, state: Mapping[str, Tensor], aliases: Mapping[str, str]):
        self.state, self.aliases = state, aliases     # aliases: a tied weight's name -> its table's
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}/{self._count}"

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        """Append one node; returns its output's name."""
        out = self.name(f"{hint}/{op_type}")
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def ops(self, op_type: str, inputs: list[str], hint: str, n_out: int, **attrs) -> list[str]:
        outs = [self.name(f"{hint}/{op_type}") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=outs[0], **attrs))
        return outs

    def weight(self, key: str) -> str:
        """The state_dict tensor `key` as a float32 initializer (ids stay int64) under its own name; a tied
        weight is its table's initializer."""
        key = self.aliases.get(key, key)
        if key not in self.initializers:
            value = self.state[key].detach().cpu()
            value = value.to(torch.float32) if value.is_floating_point() else value
            self.initializers[key] = numpy_helper.from_array(value.numpy(), key)
        return key

    def const(self, value: Any, hint: str, dtype=np.float32) -> str:
        name = self.name(f"{hint}/const")
        self.initializers[name] = numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        return name


# A layer's writer: (graph, key, spec, input names, input shapes without the batch dim) -> output name
Writer = Callable[[Graph, str, Any, list[str], list[Shape]], str]


def _linear(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    # x (N, *, in) @ W^T (in, out) + b -> (N, *, out); a tied weight is the embedding's initializer
    weight = g.weight(f"{key}.weight")
    y = g.op("MatMul", [xs[0], g.op("Transpose", [weight], key, perm=[1, 0])], key)
    return g.op("Add", [y, g.weight(f"{key}.bias")], key) if spec.bias else y


def _conv(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    # (N, C, H, W) -> (N, O, H', W'), or (N, C, L) -> (N, O, L') for conv1d
    two_d = spec.type == "conv2d"
    kernel = list(pair(spec.kernel_size)) if two_d else [spec.kernel_size]
    stride = list(pair(spec.stride)) if two_d else [spec.stride]
    padding = list(pair(spec.padding)) if two_d else [spec.padding]
    dilation = [1, 1] if two_d else [spec.dilation]
    inputs = [xs[0], g.weight(f"{key}.weight")] + ([g.weight(f"{key}.bias")] if spec.bias else [])
    return g.op("Conv", inputs, key, kernel_shape=kernel, strides=stride, pads=padding + padding,
                dilations=dilation)


def _pool(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    kernel = list(pair(spec.kernel_size))
    stride = list(pair(spec.stride if spec.stride is not None else spec.kernel_size))
    padding = list(pair(spec.padding))
    if spec.type == "maxpool2d":
        return g.op("MaxPool", [xs[0]], key, kernel_shape=kernel, strides=stride, pads=padding + padding)
    # torch's AvgPool2d default: padded zeros count in the divisor
    return g.op("AveragePool", [xs[0]], key, kernel_shape=kernel, strides=stride, pads=padding + padding,
                count_include_pad=1)


def _flatten(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    # 0 keeps the batch dim as it is (Reshape's copy rule); flatten never folds the batch (engine/layers/flatten.py)
    out_shape = Flatten(spec, shapes).out_shape
    return g.op("Reshape", [xs[0], g.const([0, *out_shape], key, np.int64)], key)


def _batchnorm(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    # evaluation mode: (x - running_mean) / sqrt(running_var + eps) * gamma + beta over dim 1
    channels = shapes[0][0]
    scale = g.weight(f"{key}.weight") if spec.affine else g.const(np.ones(channels), key)
    bias = g.weight(f"{key}.bias") if spec.affine else g.const(np.zeros(channels), key)
    return g.op("BatchNormalization", [xs[0], scale, bias, g.weight(f"{key}.running_mean"),
                                       g.weight(f"{key}.running_var")], key, epsilon=float(spec.eps))


def _layernorm(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    dim = shapes[0][-1]
    scale = g.weight(f"{key}.weight") if spec.elementwise_affine else g.const(np.ones(dim), key)
    bias = g.weight(f"{key}.bias") if spec.elementwise_affine else g.const(np.zeros(dim), key)
    return g.op("LayerNormalization", [xs[0], scale, bias], key, axis=-1, epsilon=float(spec.eps))


def _gelu(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    x = xs[0]
    if spec.approximate == "tanh":   # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = g.op("Mul", [g.op("Mul", [x, x], key), x], key)
        inner = g.op("Add", [x, g.op("Mul", [cube, g.const(0.044715, key)], key)], key)
        t = g.op("Tanh", [g.op("Mul", [inner, g.const(math.sqrt(2 / math.pi), key)], key)], key)
    else:                            # 0.5 x (1 + erf(x / sqrt(2)))
        t = g.op("Erf", [g.op("Div", [x, g.const(math.sqrt(2.0), key)], key)], key)
    half_x = g.op("Mul", [x, g.const(0.5, key)], key)
    return g.op("Mul", [half_x, g.op("Add", [t, g.const(1.0, key)], key)], key)


def _standardize(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    # mean, std (C,) viewed as (C, 1, ...) broadcast over (N, C, ...)
    view = g.const([shapes[0][0]] + [1] * (len(shapes[0]) - 1), key, np.int64)
    mean = g.op("Reshape", [g.weight(f"{key}.mean"), view], key)
    std = g.op("Reshape", [g.weight(f"{key}.std"), view], key)
    if spec.inverse:
        return g.op("Add", [g.op("Mul", [xs[0], std], key), mean], key)
    return g.op("Div", [g.op("Sub", [xs[0], mean], key), std], key)


def _merge(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    if spec.type == "concat":
        return g.op("Concat", xs, key, axis=spec.dim)
    y = xs[0]
    for x in xs[1:]:
        y = g.op("Add", [y, x], key)
    return y


def _simple(op_type: str, **attrs_of: Callable[[Any], Any]) -> Writer:
    """A writer for a one-operator layer whose attributes are read from the spec."""
    def write(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
        return g.op(op_type, [xs[0]], key, **{k: f(spec) for k, f in attrs_of.items()})
    return write


LAYERS: dict[str, Writer] = {
    "linear": _linear, "conv2d": _conv, "conv1d": _conv, "maxpool2d": _pool, "avgpool2d": _pool,
    "flatten": _flatten, "batchnorm": _batchnorm, "layernorm": _layernorm, "gelu": _gelu, "standardize": _standardize,
    "add": _merge, "concat": _merge,
    "dropout": _simple("Identity"), "relu": _simple("Relu"), "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"), "leaky_relu": _simple("LeakyRelu", alpha=lambda s: float(s.negative_slope)),
    "softmax": _simple("Softmax", axis=lambda s: s.dim),
}


def to_onnx(spec: ModelSpec | Mapping[str, Any], input_shape: Shape, state: Mapping[str, Tensor], *,
            graph_name: str = "chainrule") -> onnx.ModelProto:
    """The network `spec` on `input_shape` (no batch dim) with the weights `state` (torch.nn names), checked
    by onnx.checker. UnsupportedLayer names a layer with no ONNX form."""
    from .onnx_sequence import SEQUENCE_LAYERS
    writers = {**LAYERS, **SEQUENCE_LAYERS}
    graph_plan = plan(spec, input_shape)
    for i, layer_spec in enumerate(graph_plan.spec.layers):
        if layer_spec.type not in writers:
            raise UnsupportedLayer(f"{graph_plan.label(i)} has no ONNX export; exportable layer types: "
                                   f"{', '.join(sorted(writers))}")
    spec = graph_plan.spec
    g = Graph(state, {f"{graph_plan.keys[i]}.weight": f"{graph_plan.keys[j]}.weight"
                      for i in range(len(spec.layers)) if (j := spec.tied_index(i)) is not None})
    ids = any(layer.type == "embedding" and INPUT_INDEX in ins
              for layer, ins in zip(graph_plan.spec.layers, graph_plan.inputs))
    outs: list[str] = []
    for i, (key, layer_spec, layer) in enumerate(zip(graph_plan.keys, graph_plan.spec.layers, graph_plan.layers)):
        xs = [INPUT if j == INPUT_INDEX else outs[j] for j in graph_plan.inputs[i]]
        outs.append(writers[layer_spec.type](g, key, layer_spec, xs, list(layer.in_shapes)))
    g.nodes.append(helper.make_node("Identity", [outs[-1]], [OUTPUT], name=OUTPUT))
    x_type = TensorProto.INT64 if ids else TensorProto.FLOAT
    graph = helper.make_graph(
        g.nodes, graph_name,
        [helper.make_tensor_value_info(INPUT, x_type, [BATCH, *graph_plan.input_shape])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [BATCH, *graph_plan.output_shape])],
        initializer=list(g.initializers.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="chainrule",
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model
