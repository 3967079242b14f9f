"""A model: a graph of layers, run forward in order and backward in reverse.

All trainable parameters live in one flat tensor and all gradients in another;
each layer sees views into them under torch.nn's names. The optimizer can then
update every parameter with a handful of kernels on one buffer, and `state_dict()`
still has the exact names and layouts of the equivalent torch.nn.Sequential
(`"0.weight"`, Linear `[out, in]`), or of a module whose attributes are the
DAG layers' names.

Gradient convention: layers overwrite their parameter gradients on each backward;
where a tensor feeds several layers (a residual branch), the Model sums the
gradients flowing back into it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor

from .init import calculate_gain
from .layers import Layer, Shape, ShapeError, layer_class
from .spec import INPUT, ModelSpec

INPUT_INDEX = -1
_KEEP_INPUT_NOT_OUTPUT = ("linear", "conv2d")  # their output is free to overwrite once read
_PASS_THROUGH = ("batchnorm", "layernorm", "dropout")  # an activation after these still decides init


class SpecError(ValueError):
    """A spec that does not fit its input: names the layer and both shapes."""

    def __init__(self, index: int, key: str, kind: str, message: str):
        self.index, self.key, self.kind, self.message = index, key, kind, message
        label = f"layers[{index}] ({kind})" if key == str(index) else f"layers[{index}] '{key}' ({kind})"
        super().__init__(f"{label}: {message}")


def _fmt(shape: Shape) -> str:
    return "(N, " + ", ".join(map(str, shape)) + ")" if shape else "(N,)"


@dataclass
class Plan:
    """Shapes and parameters of a spec on an input shape, without allocating tensors."""
    spec: ModelSpec
    input_shape: Shape
    layers: list[Layer]
    keys: list[str]
    inputs: list[list[int]]  # for each layer, indices of the layers it reads (-1 = model input)

    @property
    def output_shape(self) -> Shape:
        return self.layers[-1].out_shape

    @property
    def n_parameters(self) -> int:
        return sum(_numel(s) for layer in self.layers for s in layer.param_shapes().values())

    def consumers(self, index: int) -> list[int]:
        return [i for i, ins in enumerate(self.inputs) if index in ins]


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def plan(spec: ModelSpec | Mapping[str, Any], input_shape: Shape) -> Plan:
    """Infer every layer's output shape; raise SpecError naming the layer and shapes on a mismatch."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.model_validate(spec)
    input_shape = tuple(int(d) for d in input_shape)
    keys = spec.keys()
    index_of = {k: i for i, k in enumerate(keys)}
    index_of[INPUT] = INPUT_INDEX
    inputs = [[index_of[k] for k in ins] for ins in spec.input_keys()]
    layers: list[Layer] = []
    for i, layer_spec in enumerate(spec.layers):
        in_shapes = [input_shape if j == INPUT_INDEX else layers[j].out_shape for j in inputs[i]]
        try:
            layers.append(layer_class(layer_spec.type)(layer_spec, in_shapes))
        except ShapeError as e:
            shapes = " and ".join(_fmt(s) for s in in_shapes)
            raise SpecError(i, keys[i], layer_spec.type, f"input shape {shapes}: {e}") from None
    return Plan(spec, input_shape, layers, keys, inputs)


def default_init(p: Plan, index: int) -> tuple[str, float]:
    """(scheme, gain) for a layer with weights: from its spec, else from the activation it feeds.

    He for ReLU-family consumers, Xavier for tanh / sigmoid, torch's own default otherwise;
    the gain is torch.nn.init.calculate_gain of that activation.
    """
    spec = p.spec.layers[index]
    j, act = index, None
    while True:
        nxt = p.consumers(j)
        if not nxt:
            break
        j = nxt[0]
        kind = p.spec.layers[j].type
        if kind not in _PASS_THROUGH:
            act = p.spec.layers[j]
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


class Model:
    """Built by `Model.from_spec`; see the module docstring for the storage layout."""

    def __init__(self, p: Plan, *, seed: int, dtype: torch.dtype, device: str | torch.device):
        self.plan, self.spec, self.keys, self.layers = p, p.spec, p.keys, p.layers
        self.input_shape, self.output_shape = p.input_shape, p.output_shape
        self.dtype, self.device = dtype, torch.device(device)
        self._inputs = p.inputs
        self._sequential = all(ins == [i - 1] for i, ins in enumerate(p.inputs))
        # _leads_to_params[i]: layer i or a layer upstream of it has parameters, so training
        # needs the gradient of its output; the rest of the backward pass only feeds dL/dinput
        self._leads_to_params: list[bool] = []
        for i, layer in enumerate(p.layers):
            self._leads_to_params.append(bool(layer.param_shapes()) or any(
                j != INPUT_INDEX and self._leads_to_params[j] for j in p.inputs[i]))
        # layers whose one input needs no gradient in training: they may skip computing dx
        self._input_edge = [layer for i, layer in enumerate(p.layers) if self._leads_to_params[i]
                            and not layer.merge and not self._wants_grad(p.inputs[i][0])]
        first = next((i for i, t in enumerate(self._leads_to_params) if t), len(p.layers))
        self._reversed = {True: p.layers[::-1], False: p.layers[first:][::-1]}  # by need_input_grad
        for i, layer in enumerate(p.layers):   # relu in place on a temporary that only it reads
            j = p.inputs[i][0]
            if layer.kind == "relu" and j != INPUT_INDEX and p.layers[j].kind in _KEEP_INPUT_NOT_OUTPUT \
                    and p.consumers(j) == [i]:
                layer.inplace = True

        shapes = [(key, name, shape) for key, layer in zip(self.keys, self.layers)
                  for name, shape in layer.param_shapes().items()]
        total = sum(_numel(s) for _, _, s in shapes)
        self.flat_params = torch.zeros(total, dtype=dtype, device=self.device)
        self.flat_grads = torch.zeros(total, dtype=dtype, device=self.device)
        self._params: dict[str, Tensor] = {}
        self._grads: dict[str, Tensor] = {}
        self._buffers: dict[str, Tensor] = {}
        self._state_keys: list[str] = []  # torch.nn order: per module, parameters then buffers
        offset = 0
        init_gen = torch.Generator().manual_seed(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)  # dropout masks
        for i, (key, layer) in enumerate(zip(self.keys, self.layers)):
            params, grads, buffers = {}, {}, {}
            for name, shape in layer.param_shapes().items():
                n = _numel(shape)
                params[name] = self.flat_params[offset:offset + n].view(shape)
                grads[name] = self.flat_grads[offset:offset + n].view(shape)
                offset += n
                self._params[f"{key}.{name}"] = params[name]
                self._grads[f"{key}.{name}"] = grads[name]
                self._state_keys.append(f"{key}.{name}")
            for name, (shape, bdtype) in layer.buffer_shapes().items():
                buffers[name] = torch.zeros(shape, dtype=bdtype or dtype, device=self.device)
                self._buffers[f"{key}.{name}"] = buffers[name]
                self._state_keys.append(f"{key}.{name}")
            layer.bind(params, grads, buffers)
            layer.generator = self.generator
            scheme, gain = default_init(p, i) if params else ("torch_default", 1.0)
            layer.reset_parameters(scheme, gain, init_gen)

    @classmethod
    def from_spec(cls, spec: ModelSpec | Mapping[str, Any], input_shape: Shape, *, seed: int = 0,
                  dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> "Model":
        return cls(plan(spec, input_shape), seed=seed, dtype=dtype, device=device)

    # -- named tensors ------------------------------------------------------------------
    def parameters(self) -> dict[str, Tensor]:
        """Trainable tensors by state_dict name (views into `flat_params`)."""
        return dict(self._params)

    def grads(self) -> dict[str, Tensor]:
        """Gradients of the last backward, same names as `parameters()`."""
        return dict(self._grads)

    def buffers(self) -> dict[str, Tensor]:
        return dict(self._buffers)

    def layer_items(self) -> Iterator[tuple[str, Layer]]:
        return zip(self.keys, self.layers)

    @property
    def n_parameters(self) -> int:
        return self.flat_params.numel()

    def state_dict(self) -> dict[str, Tensor]:
        """Parameters and buffers, named and laid out as torch.nn's state_dict (copies)."""
        both = {**self._params, **self._buffers}
        return {k: both[k].detach().clone() for k in self._state_keys}

    def load_state_dict(self, state: Mapping[str, Tensor], strict: bool = True) -> None:
        both = {**self._params, **self._buffers}
        missing = [k for k in self._state_keys if k not in state]
        unexpected = [k for k in state if k not in both]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        for k, v in state.items():
            if k not in both:
                continue
            if tuple(v.shape) != tuple(both[k].shape):
                raise ValueError(f"state_dict[{k!r}] has shape {tuple(v.shape)}, "
                                 f"the model expects {tuple(both[k].shape)}")
            both[k].copy_(v)

    # -- math ---------------------------------------------------------------------------
    def forward(self, x: Tensor, training: bool = True) -> Tensor:
        """x: (N, *input_shape) -> (N, *output_shape). Call under torch.no_grad()."""
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"input has shape {tuple(x.shape)}, the model expects {_fmt(self.input_shape)}")
        if self._sequential:
            for layer in self.layers:
                x = layer.forward(x, training)
            return x
        outs: dict[int, Tensor] = {INPUT_INDEX: x}
        for i, layer in enumerate(self.layers):
            ins = self._inputs[i]
            outs[i] = (layer.forward([outs[j] for j in ins], training) if layer.merge
                       else layer.forward(outs[ins[0]], training))
        return outs[len(self.layers) - 1]

    def _wants_grad(self, j: int) -> bool:
        """In training (no input gradient): is the gradient of layer j's output (or the input, -1) used?"""
        return j != INPUT_INDEX and self._leads_to_params[j]

    def backward(self, dout: Tensor, need_input_grad: bool = True) -> Tensor | None:
        """dout: dL/d(output) -> dL/d(input); fills `grads()`.

        need_input_grad=False (training): returns None and skips every gradient that only
        leads to the input: the input-gradient matmul of the first linear / conv, and the
        backward of any parameter-free layers before it.
        """
        for layer in self._input_edge:
            layer.need_dx = need_input_grad
        if self._sequential:
            for layer in self._reversed[need_input_grad]:
                dout = layer.backward(dout)
            return dout if need_input_grad else None
        pending: dict[int, Tensor] = {len(self.layers) - 1: dout}
        for i in range(len(self.layers) - 1, -1, -1):
            if not need_input_grad and not self._leads_to_params[i]:
                continue
            d = pending.pop(i)
            layer, ins = self.layers[i], self._inputs[i]
            dxs = layer.backward(d) if layer.merge else [layer.backward(d)]
            for j, dx in zip(ins, dxs):
                if need_input_grad or self._wants_grad(j):
                    pending[j] = dx if j not in pending else pending[j] + dx  # branches add up
        return pending[INPUT_INDEX] if need_input_grad else None

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        """Eval-mode forward in batches."""
        x = x.to(self.device, self.dtype)
        return torch.cat([self.forward(x[i:i + batch_size], training=False)
                          for i in range(0, x.shape[0], batch_size)]) if x.shape[0] else \
            torch.empty((0, *self.output_shape), dtype=self.dtype, device=self.device)
