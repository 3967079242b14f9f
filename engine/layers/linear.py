"""Linear: Z = X W^T + b  (torch stores W as [out, in]), over the last dim of (N, *, in).

With `tie_to` its weight is an embedding's table (nanoGPT's lm_head): the Model binds that
table's parameter and gradient here; this backward runs first and writes dW, the embedding's
adds its scatter to it."""
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
        if len(shape) < 1:
            raise ShapeError(f"linear expects (N, *, features) input, got {format_shape(shape)}")
        return (*shape[:-1], self.spec.out_features)

    @property
    def tied(self) -> bool:
        return self.spec.tie_to is not None

    def param_shapes(self) -> dict[str, Shape]:
        """Its own parameters: a tied weight belongs to the embedding (`shared_shapes`)."""
        shapes = {} if self.tied else {"weight": self.weight_shape}
        if self.spec.bias:
            shapes["bias"] = (self.spec.out_features,)
        return shapes

    @property
    def weight_shape(self) -> Shape:
        return (self.spec.out_features, self.in_shapes[0][-1])

    def fans(self) -> tuple[int, int]:
        return self.in_shapes[0][-1], self.spec.out_features

    def reset_parameters(self, init: str, gain: float, generator: torch.Generator) -> None:
        fan_in, fan_out = self.fans()
        if not self.tied:                                       # a tied table is the embedding's to fill
            init_weight(self.params["weight"], init, gain, fan_in, fan_out, generator)
        if "bias" in self.params:
            init_bias(self.params["bias"], init, fan_in, generator)

    def bind(self, params: dict[str, Tensor], grads: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        super().bind(params, grads, buffers)
        # the hot path's parameter views, looked up once (W^T is a view of W: it follows every
        # update); a tuple, as they are storage, not activations kept between steps
        self._views = (params["weight"].t(), params.get("bias"), grads["weight"], grads.get("bias"))

    def forward(self, x: Tensor, training: bool) -> Tensor:
        lead = x.shape[:-1]                                     # (N,) or (N, T, ...)
        x = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x   # (M, in), M = N * T * ...
        self.cache = x
        wt, bias = self._views[:2]                              # (in, out), (out,) or None
        y = torch.addmm(bias, x, wt) if bias is not None else torch.mm(x, wt)   # (M, in) @ (in, out) -> (M, out)
        return y if len(lead) == 1 else y.view(*lead, y.shape[1])

    def backward(self, dy: Tensor) -> Tensor | None:
        lead = dy.shape[:-1]
        dy = dy.reshape(-1, dy.shape[-1]) if dy.dim() != 2 else dy   # (M, out)
        x, self.cache = self.cache, None                        # (M, in)
        dw, db = self._views[2:]
        torch.mm(dy.t(), x, out=dw)                             # (out, M) @ (M, in) -> (out, in)
        if db is not None:
            torch.sum(dy, 0, out=db)                            # (out,)
        if not self.need_dx:                                    # reads the model input: skip a matmul
            return None
        dx = torch.mm(dy, self.params["weight"])               # (M, out) @ (out, in) -> (M, in)
        return dx if len(lead) == 1 else dx.view(*lead, dx.shape[1])
