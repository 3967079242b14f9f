"""chainrule.twin: the torch.nn module equivalent to a model spec (the reference for tests, the
benchmark's other side, a way for users to take a trained model into plain PyTorch).

It is torch.nn, so it stands outside engine/, whose rule is no nn.Module: the engine's layers are
its own, and this module only mirrors them.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from engine.planning import INPUT_INDEX, Plan, plan
from engine.shapes import Shape
from engine.spec import ModelSpec

from .twin_sequence import sequence_module


def twin(spec: ModelSpec | Mapping[str, Any], input_shape: Shape, *, generator: torch.Generator | None = None,
         dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> nn.Module:
    """The torch.nn module that computes what `Model.from_spec(spec, input_shape)` computes.

    A sequential spec gives an nn.Sequential; a DAG spec (any layer with `inputs`) a module whose
    submodules are named by the layer names and whose forward follows the graph. Parameter and
    buffer names, shapes and order are the Model's, so its state_dict loads with strict=True.
    The weights are torch's default init: load the Model's to compare the two.

    generator: dropout layers draw their masks as the engine does (bernoulli_(1 - p) on this
    generator, in layer order), so a generator seeded like the Model (`seed`, on its device)
    gives the engine's masks; without one they are nn.Dropout. SpecError for a spec that does
    not fit input_shape; ValueError for a DAG layer name that nn.Module itself uses ("eval").

        model = engine.Model.from_spec(spec, (1, 28, 28), seed=0)
        net = twin(spec, (1, 28, 28))
        net.load_state_dict(model.state_dict(), strict=True)
        torch.testing.assert_close(net.eval()(x), model.predict(x))
    """
    graph = plan(spec, input_shape)
    modules = [_module(layer_spec, layer.in_shapes[0], generator)
               for layer_spec, layer in zip(graph.spec.layers, graph.layers)]
    net = Graph(graph, modules) if graph.spec.is_dag else nn.Sequential(*modules)
    for i, module in enumerate(modules):
        if graph.spec.tied_index(i) is not None:          # one Parameter under both names
            module.weight = modules[graph.spec.tied_index(i)].weight
    return net.to(device=device, dtype=dtype)


def _module(spec, in_shape: Shape, generator: torch.Generator | None) -> nn.Module:
    """The torch.nn layer for one layer spec reading `in_shape` (without the batch dim)."""
    kind = spec.type
    sequence = sequence_module(spec, in_shape, generator)
    if sequence is not None:
        return sequence
    if kind == "linear":
        return nn.Linear(in_shape[-1], spec.out_features, bias=spec.bias)
    if kind == "conv2d":
        return nn.Conv2d(in_shape[0], spec.out_channels, spec.kernel_size, stride=spec.stride,
                         padding=spec.padding, bias=spec.bias)
    if kind == "conv1d":
        return nn.Conv1d(in_shape[0], spec.out_channels, spec.kernel_size, stride=spec.stride,
                         padding=spec.padding, dilation=spec.dilation, bias=spec.bias)
    if kind == "seq_pool":
        return SeqPool(spec.mode, spec.padding_idx)
    if kind in ("maxpool2d", "avgpool2d"):
        pool = nn.MaxPool2d if kind == "maxpool2d" else nn.AvgPool2d
        return pool(spec.kernel_size, stride=spec.stride, padding=spec.padding)
    if kind == "batchnorm":
        norm = nn.BatchNorm1d if len(in_shape) == 1 else nn.BatchNorm2d
        return norm(in_shape[0], eps=spec.eps, momentum=spec.momentum, affine=spec.affine)
    if kind == "layernorm":
        return nn.LayerNorm(in_shape[-1], eps=spec.eps, elementwise_affine=spec.elementwise_affine)
    if kind == "dropout":
        return nn.Dropout(spec.p) if generator is None else SeededDropout(spec.p, generator)
    if kind == "flatten":
        return nn.Flatten(spec.start_dim, spec.end_dim)
    if kind == "relu":
        return nn.ReLU()
    if kind == "leaky_relu":
        return nn.LeakyReLU(spec.negative_slope)
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "tanh":
        return nn.Tanh()
    if kind == "gelu":
        return nn.GELU(approximate=spec.approximate)
    if kind == "softmax":
        return nn.Softmax(dim=spec.dim)
    if kind == "standardize":
        return Standardize(in_shape, spec.mean, spec.std, spec.inverse)
    if kind == "add":
        return Add()
    if kind == "concat":
        return Concat(spec.dim)
    raise ValueError(f"no torch.nn twin for layer type {kind!r}")


class SeededDropout(nn.Module):
    """Inverted dropout whose mask is the engine's: keep ~ bernoulli_(1 - p) on `generator`,
    y = x * (keep * (1 / (1 - p))), the same ops in the same order."""

    def __init__(self, p: float, generator: torch.Generator):
        super().__init__()
        self.p, self.generator = p, generator

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep.mul_(1 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Standardize(nn.Module):
    """(x - mean) / std per feature (dim 1), or x * std + mean with inverse; mean and std are buffers (C,)
    in the state_dict, as the engine's layer keeps them. Without the spec's values: 0 and 1 until loaded."""

    def __init__(self, in_shape: Shape, mean: list[float] | None, std: list[float] | None, inverse: bool):
        super().__init__()
        features, self.inverse = in_shape[0], inverse
        self.register_buffer("mean", torch.zeros(features) if mean is None else torch.tensor(mean, dtype=torch.float64))
        self.register_buffer("std", torch.ones(features) if std is None else torch.tensor(std, dtype=torch.float64))
        self.view = (features,) + (1,) * (len(in_shape) - 1)

    def forward(self, x: Tensor) -> Tensor:
        mean, std = self.mean.view(self.view), self.std.view(self.view)
        return x * std + mean if self.inverse else (x - mean) / std

    def extra_repr(self) -> str:
        return f"features={self.view[0]}, inverse={self.inverse}"


class Add(nn.Module):
    """The sum of its inputs (a residual connection)."""

    def forward(self, *xs: Tensor) -> Tensor:
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y


class Concat(nn.Module):
    """torch.cat of its inputs along `dim` (counting the batch dim, as torch does)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class SeqPool(nn.Module):
    """Mean or max over time, (N, T, D) -> (N, D); with padding_idx, forward(x, ids) leaves out the
    positions whose id (N, T) is padding_idx, and an all-padding row is 0."""

    def __init__(self, mode: str, padding_idx: int | None):
        super().__init__()
        self.mode, self.padding_idx = mode, padding_idx

    def forward(self, x: Tensor, ids: Tensor | None = None) -> Tensor:
        keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if ids is None else ids != self.padding_idx
        if self.mode == "mean":
            weight = keep.to(x.dtype).unsqueeze(2)                        # (N, T, 1)
            return (x * weight).sum(1) / weight.sum(1).clamp_min(1)
        top = x.masked_fill(~keep.unsqueeze(2), -torch.inf).max(1).values  # (N, D)
        return torch.where(keep.any(1, keepdim=True), top, torch.zeros_like(top))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, padding_idx={self.padding_idx}"


class Graph(nn.Module):
    """A DAG spec's twin: a submodule per layer, named by the layer's key; forward follows `inputs`."""

    def __init__(self, graph: Plan, modules: list[nn.Module]):
        super().__init__()
        self._wiring = list(zip(graph.keys, graph.inputs))     # (key, indices of the layers it reads)
        for index, (key, module) in enumerate(zip(graph.keys, modules)):
            self._place(graph.label(index), key, module)
        self._order = modules      # a plain list, not registered: the modules live at their keys

    def _place(self, label: str, key: str, module: nn.Module) -> None:
        """Register module at `key`; a dotted key (a repeat's `blocks.0.attn`) nests in plain containers."""
        *path, last = key.split(".")
        parent: nn.Module = self
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        if hasattr(parent, last):
            raise ValueError(f"{label}: the name {key!r} is an attribute of torch.nn.Module, "
                             "so a torch twin cannot name a submodule so; rename the layer")
        parent.add_module(last, module)

    def forward(self, x: Tensor) -> Tensor:
        outs: list[Tensor] = []
        for module, (_, inputs) in zip(self._order, self._wiring):
            outs.append(module(*[x if j == INPUT_INDEX else outs[j] for j in inputs]))
        return outs[-1]
