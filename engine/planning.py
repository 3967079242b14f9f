"""Shape inference: a spec on an input shape becomes a Plan of layers, without allocating a tensor.

`plan` is what the API runs at submit time (a mismatch is a 422 naming the layer and both
shapes) and what `Model.from_spec` builds on. `default_init` reads the plan to pick each
weight's initialization from the activation it feeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .init import calculate_gain
from .layers import Layer, ShapeError, layer_class
from .shapes import Shape, format_shape
from .spec import INPUT, ModelSpec

INPUT_INDEX = -1                                        # in Plan.inputs: the model input
_PASS_THROUGH = ("batchnorm", "layernorm", "dropout")  # an activation after these still decides init


def layer_label(index: int, key: str, kind: str) -> str:
    """How messages name a layer: "layers[2] (linear)", or "layers[2] 'head' (linear)" in a DAG."""
    return f"layers[{index}] ({kind})" if key == str(index) else f"layers[{index}] '{key}' ({kind})"


class SpecError(ValueError):
    """A spec that does not fit its input: names the layer and both shapes."""

    def __init__(self, index: int, key: str, kind: str, message: str):
        self.index, self.key, self.kind, self.message = index, key, kind, message
        super().__init__(f"{layer_label(index, key, kind)}: {message}")


@dataclass
class Plan:
    """Shapes and parameters of a spec on an input shape, without allocating tensors."""
    spec: ModelSpec
    input_shape: Shape
    layers: list[Layer]
    keys: list[str]
    inputs: list[list[int]]  # for each layer, indices of the layers it reads (INPUT_INDEX = model input)

    @property
    def output_shape(self) -> Shape:
        return self.layers[-1].out_shape

    @property
    def n_parameters(self) -> int:
        return sum(math.prod(s) for layer in self.layers for s in layer.param_shapes().values())

    def consumers(self, index: int) -> list[int]:
        return [i for i, ins in enumerate(self.inputs) if index in ins]

    def label(self, index: int) -> str:
        return layer_label(index, self.keys[index], self.spec.layers[index].type)


def _empty_dim(shape: Shape) -> int | None:
    """The first size below 1 in `shape`, or None."""
    return next((d for d in shape if d < 1), None)


def plan(spec: ModelSpec | Mapping[str, Any], input_shape: Shape) -> Plan:
    """Infer every layer's output shape; raise SpecError naming the layer and shapes on a mismatch,
    and on any dimension of size 0 (in the input, or in a layer's output)."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.model_validate(spec)
    input_shape = tuple(int(d) for d in input_shape)
    keys = spec.keys()
    index_of = {k: i for i, k in enumerate(keys)}
    index_of[INPUT] = INPUT_INDEX
    inputs = [[index_of[k] for k in ins] for ins in spec.input_keys()]
    layers: list[Layer] = []
    for i, layer_spec in enumerate(spec.layers):
        in_shapes = [input_shape if j == INPUT_INDEX else layers[j].out_shape for j in inputs[i]]
        shapes = " and ".join(format_shape(s) for s in in_shapes)
        for s in in_shapes:     # only the model input can hold one: outputs are checked below
            if _empty_dim(s) is not None:
                raise SpecError(i, keys[i], layer_spec.type, f"input shape {format_shape(s)} has a dimension of "
                                f"size {_empty_dim(s)}; every dimension must be at least 1")
        try:
            layer = layer_class(layer_spec.type)(layer_spec, in_shapes)
        except ShapeError as e:
            raise SpecError(i, keys[i], layer_spec.type, f"input shape {shapes}: {e}") from None
        if _empty_dim(layer.out_shape) is not None:
            raise SpecError(i, keys[i], layer_spec.type, f"input shape {shapes} gives output shape "
                            f"{format_shape(layer.out_shape)}, with a dimension of size "
                            f"{_empty_dim(layer.out_shape)}; every dimension must be at least 1")
        layers.append(layer)
        if spec.tied_index(i) is not None:
            _check_tie(i, keys[i], layers[spec.tied_index(i)].param_shapes()["weight"], layer)
    return Plan(spec, input_shape, layers, keys, inputs)


def _check_tie(i: int, key: str, table: Shape, layer: Layer) -> None:
    """A tied linear's weight has the shape of the embedding's table it shares (the spec checked
    that tie_to names an earlier embedding)."""
    if tuple(layer.weight_shape) != tuple(table):
        raise SpecError(i, key, "linear", f"tie_to {layer.spec.tie_to!r}: this weight would be "
                        f"{format_shape(layer.weight_shape, batch=False)} but the embedding's table is "
                        f"{format_shape(table, batch=False)}; valid: out_features = num_embeddings "
                        "and in_features = embedding_dim")


def default_init(graph: Plan, index: int) -> tuple[str, float]:
    """(scheme, gain) for a layer with weights: from its spec, else from the activation it feeds.

    He for ReLU-family consumers, Xavier for tanh / sigmoid, torch's own default otherwise;
    the gain is torch.nn.init.calculate_gain of that activation.
    """
    spec = graph.spec.layers[index]
    j, act = index, None
    while True:
        nxt = graph.consumers(j)
        if not nxt:
            break
        j = nxt[0]
        kind = graph.spec.layers[j].type
        if kind not in _PASS_THROUGH:
            act = graph.spec.layers[j]
            break
    kind = act.type if act is not None else "linear"
    if kind in ("relu", "leaky_relu"):
        gain = calculate_gain(kind, getattr(act, "negative_slope", None))
        default = "he_normal"
    elif kind in ("tanh", "sigmoid"):
        gain, default = calculate_gain(kind), "xavier_uniform"
    else:
        gain, default = 1.0, "torch_default"
    return (getattr(spec, "init", None) or default), gain
