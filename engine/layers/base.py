"""The layer contract every node of a model follows.

A layer is built from its spec and the shapes of its inputs (without the batch
dimension) and knows its output shape at once, so shape inference needs no tensor.
The Model then hands it views into its flat parameter and gradient storage
(`bind`), fills the parameters (`reset_parameters`), and calls:

  forward(x, training)  -> y        puts what backward needs in `self.cache`, and writes
                                    nothing else on self: the Model puts back a pending
                                    training forward's cache after an eval forward
  backward(dy)          -> dx       reads `self.cache` and sets it to None (so no activation
                                    outlives the step); OVERWRITES self.grads[...] (never
                                    accumulates); gradients of a tensor read by several layers
                                    are summed by the Model, not by the layers; it never
                                    modifies dy (Add hands one dy to every branch)

The Model calls backward only to answer its last training forward, with dy of that
forward's output shape (it raises BackwardError otherwise), so a layer trusts its cache.
A layer's outputs are observed from outside, through `Model.forward(x, observe=...)`:
a layer keeps no output for anyone but its own backward.

`need_dx` is set by the Model before backward: False when nothing upstream wants dx
(the layer reads the model input and training needs no input gradient). A layer with
parameters may then skip that work and return None; the others may ignore the flag.

`reuse_output` is set by the Model before backward: True when nothing reads the layer's
forward output once its backward runs (every reader's backward has run, the output is not
the model's output nor seen through a view or an identity layer, and the forward was not
observed). An activation that keeps its output may then write dx into it instead of into a
fresh tensor: on the CPU a fresh activation-sized tensor costs page faults, often more than
the arithmetic.

Merge layers (add, concat) take and return lists instead (see `Merge`).
Parameter and buffer names and shapes are exactly torch.nn's, in torch.nn's order.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from ..shapes import Shape


class ShapeError(ValueError):
    """A layer cannot take the shape it is given; the Model adds which layer."""


class Layer:
    kind: ClassVar[str]
    merge: ClassVar[bool] = False
    need_dx: bool = True   # see the module docstring
    reuse_output: bool = False   # see the module docstring
    compile: bool = False  # run `formula`s through torch.compile (Model.from_spec(compile=True))
    cache: Any = None      # what backward needs from the last forward (a tensor, a tuple or None)

    def __init__(self, spec, in_shapes: list[Shape]):
        self.spec = spec
        self.in_shapes = in_shapes
        self.out_shape: Shape = self.infer(in_shapes)
        self.params: dict[str, Tensor] = {}
        self.grads: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}

    # -- shapes -------------------------------------------------------------------------
    def infer(self, in_shapes: list[Shape]) -> Shape:
        """Output shape (no batch dim); raise ShapeError naming what is wrong."""
        return in_shapes[0]

    def param_shapes(self) -> dict[str, Shape]:
        return {}

    def buffer_shapes(self) -> dict[str, tuple[Shape, torch.dtype | None]]:
        """name -> (shape, dtype or None for the model's dtype)."""
        return {}

    # -- storage and init ---------------------------------------------------------------
    def bind(self, params: dict[str, Tensor], grads: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        self.params, self.grads, self.buffers = params, grads, buffers

    def reset_parameters(self, init: str, gain: float, generator: torch.Generator) -> None:
        """Fill params/buffers; `init` and `gain` come from the spec or the consumer activation."""

    def fans(self) -> tuple[int, int]:
        """(fan_in, fan_out) of the weight, as torch.nn.init computes them."""
        raise NotImplementedError

    # -- math ---------------------------------------------------------------------------
    def forward(self, x: Tensor, training: bool) -> Tensor:
        raise NotImplementedError

    def backward(self, dy: Tensor) -> Tensor:
        raise NotImplementedError

    def formula(self, fn: Callable) -> Callable:
        """fn, a formula of tensors, or the same through torch.compile when the model compiles
        (engine.layers.compiled)."""
        if not self.compile:
            return fn
        from .compiled import compiled          # torch.compile's machinery: imported only when used
        return compiled(fn)

    def grad_buffer(self, y: Tensor) -> Tensor:
        """Where backward may write a dx shaped like its kept output y: y itself when `reuse_output`."""
        return y if self.reuse_output else torch.empty_like(y)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_shapes} -> {self.out_shape})"


class Merge(Layer):
    """A layer of several inputs: forward(xs, training) -> y, backward(dy) -> [dx per input]; a dx of
    None is no gradient (integer ids), which the Model skips."""
    merge = True

    def forward(self, xs: list[Tensor], training: bool) -> Tensor:  # type: ignore[override]
        raise NotImplementedError

    def backward(self, dy: Tensor) -> list[Tensor]:  # type: ignore[override]
        raise NotImplementedError
