"""Linear: Z = X W^T + b  (torch stores W as [out, in])."""
from __future__ import annotations

import torch
from torch import Tensor

from ..init import init_bias, init_weight
from ..shapes import format_shape
from .base import Layer, Shape, ShapeError


class Linear(Layer):
    kind = "linear"

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        if len(shape) != 1:
            raise ShapeError(f"linear expects (N, features) input, got {format_shape(shape)}; "
                             "add a flatten layer before it")
        return (self.spec.out_features,)

    def param_shapes(self) -> dict[str, Shape]:
        shapes = {"weight": (self.spec.out_features, self.in_shapes[0][0])}
        if self.spec.bias:
            shapes["bias"] = (self.spec.out_features,)
        return shapes

    def fans(self) -> tuple[int, int]:
        return self.in_shapes[0][0], self.spec.out_features

    def reset_parameters(self, init: str, gain: float, generator: torch.Generator) -> None:
        fan_in, fan_out = self.fans()
        init_weight(self.params["weight"], init, gain, fan_in, fan_out, generator)
        if "bias" in self.params:
            init_bias(self.params["bias"], init, fan_in, generator)

    def bind(self, params: dict[str, Tensor], grads: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        super().bind(params, grads, buffers)
        # the hot path's parameter views, looked up once (W^T is a view of W: it follows every
        # update); a tuple, as they are storage, not activations kept between steps
        self._views = (params["weight"].t(), params.get("bias"), grads["weight"], grads.get("bias"))

    def forward(self, x: Tensor, training: bool) -> Tensor:
        self.cache = x                                          # (N, in)
        wt, bias = self._views[:2]                              # (in, out), (out,) or None
        if bias is not None:
            return torch.addmm(bias, x, wt)                     # (N, in) @ (in, out) + (out,) -> (N, out)
        return torch.mm(x, wt)

    def backward(self, dy: Tensor) -> Tensor | None:
        # dy: (N, out)
        x, self.cache = self.cache, None                        # (N, in)
        dw, db = self._views[2:]
        torch.mm(dy.t(), x, out=dw)                             # (out, N) @ (N, in) -> (out, in)
        if db is not None:
            torch.sum(dy, 0, out=db)                            # (out,)
        if not self.need_dx:                                    # reads the model input: skip a matmul
            return None
        return torch.mm(dy, self.params["weight"])             # (N, out) @ (out, in) -> (N, in)
