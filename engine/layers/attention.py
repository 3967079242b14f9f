"""Multi-head self-attention, torch.nn.MultiheadAttention's parameters, backward by hand.

Forward, for x (B, T, D), H heads of size hs = D / H:
    q, k, v = split(x W_in^T + b_in)                      each (B, H, T, hs)
    S = q k^T / sqrt(hs), masked to -inf above the diagonal when causal      (B, H, T, T)
    P = softmax(S) over the last dim;  P' = P * dropout mask / (1 - p) in training
    y = (P' v) regrouped to (B, T, D);  out = y W_out^T + b_out

Backward (llm.c's attention_backward: through the value sum, then the softmax, then q and k):
    dW_out = dout^T y,  db_out = sum dout,  dy = dout W_out
    dv = P'^T dy_h,  dP' = dy_h v^T,  dP = dP' * mask / (1 - p)
    dS = P * (dP - rowsum(dP * P))          the softmax's O(T^2) backward, never its Jacobian;
                                            masked entries have P = 0, so dS = 0 there
    dq = dS k / sqrt(hs),  dk = dS^T q / sqrt(hs)
    dqkv = [dq, dk, dv],  dW_in = dqkv^T x,  db_in = sum dqkv,  dx = dqkv W_in
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..init import init_weight
from ..shapes import format_shape
from .base import Layer, Shape, ShapeError


class SelfAttention(Layer):
    kind = "self_attention"
    generator: torch.Generator | None = None      # dropout masks on the attention weights

    def infer(self, in_shapes: list[Shape]) -> Shape:
        (shape,) = in_shapes
        if len(shape) != 2:
            raise ShapeError(f"self_attention expects (N, T, D) input, got {format_shape(shape)}")
        d, h = shape[1], self.spec.num_heads
        if d % h:
            raise ShapeError(f"embed_dim {d} is not divisible by num_heads {h}; valid num_heads divide {d}")
        return shape

    @property
    def dim(self) -> int:
        return self.in_shapes[0][1]

    def param_shapes(self) -> dict[str, Shape]:
        d = self.dim
        shapes = {"in_proj_weight": (3 * d, d)}
        if self.spec.bias:
            shapes["in_proj_bias"] = (3 * d,)
        shapes["out_proj.weight"] = (d, d)
        if self.spec.bias:
            shapes["out_proj.bias"] = (d,)
        return shapes

    def fans(self) -> tuple[int, int]:
        return self.dim, 3 * self.dim

    def reset_parameters(self, init: str, gain: float, generator: torch.Generator) -> None:
        """torch.nn.MultiheadAttention's, whatever layer reads it: Xavier-uniform in_proj (as one
        (3D, D) matrix), nn.Linear's default out_proj, zero biases."""
        d = self.dim
        init_weight(self.params["in_proj_weight"], "xavier_uniform", 1.0, d, 3 * d, generator)
        init_weight(self.params["out_proj.weight"], "torch_default", 1.0, d, d, generator)
        if self.spec.bias:
            self.params["in_proj_bias"].zero_()
            self.params["out_proj.bias"].zero_()

    def _heads(self, t: Tensor, b: int, n: int) -> Tensor:
        """(B*T, D) -> (B, H, T, hs)."""
        h = self.spec.num_heads
        return t.view(b, n, h, self.dim // h).transpose(1, 2)

    def forward(self, x: Tensor, training: bool) -> Tensor:
        b, n, d = x.shape                                        # x: (B, T, D)
        p = self.params
        x2 = x.reshape(b * n, d)
        qkv = _affine(x2, p["in_proj_weight"], p.get("in_proj_bias"))          # (B*T, 3D)
        q, k, v = (self._heads(t, b, n) for t in qkv.split(d, dim=1))           # each (B, H, T, hs)
        scale = 1.0 / math.sqrt(d // self.spec.num_heads)
        scores = torch.matmul(q, k.transpose(-2, -1)).mul_(scale)               # (B, H, T, T)
        if self.spec.causal:
            above = torch.ones(n, n, dtype=torch.bool, device=x.device).triu_(1)
            scores.masked_fill_(above, float("-inf"))
        probs = torch.softmax(scores, dim=-1)                                   # (B, H, T, T)
        drop = self.spec.dropout if training else 0.0
        mask = None
        if drop > 0:
            mask = torch.empty_like(probs).bernoulli_(1 - drop, generator=self.generator).mul_(1 / (1 - drop))
            weights = probs * mask                                              # P'
        else:
            weights = probs
        y = torch.matmul(weights, v).transpose(1, 2).reshape(b * n, d)          # (B*T, D)
        out = _affine(y, p["out_proj.weight"], p.get("out_proj.bias"))         # (B*T, D)
        self.cache = (x2, q, k, v, probs, mask, weights, y, scale)
        return out.view(b, n, d)

    def attention_weights(self) -> Tensor | None:
        """P of the last forward, (B, H, T, T) before dropout, or None once the backward has used it."""
        return self.cache[4] if self.cache else None

    def backward(self, dout: Tensor) -> Tensor | None:
        (x2, q, k, v, probs, mask, weights, y, scale), self.cache = self.cache, None
        b, n, d = dout.shape
        p, g = self.params, self.grads
        dout2 = dout.reshape(b * n, d)                                           # (B*T, D)
        torch.mm(dout2.t(), y, out=g["out_proj.weight"])                         # (D, D)
        if self.spec.bias:
            torch.sum(dout2, 0, out=g["out_proj.bias"])
        dy = self._heads(torch.mm(dout2, p["out_proj.weight"]), b, n)           # (B, H, T, hs)
        dv = torch.matmul(weights.transpose(-2, -1), dy)                         # (B, H, T, hs)
        dprobs = torch.matmul(dy, v.transpose(-2, -1))                           # (B, H, T, T) dL/dP'
        if mask is not None:
            dprobs.mul_(mask)                                                    # dL/dP
        # softmax backward: dS = P * (dP - rowsum(dP * P)), then the 1/sqrt(hs) of S = q k^T * scale
        dscores = dprobs.sub_((dprobs * probs).sum(-1, keepdim=True)).mul_(probs).mul_(scale)
        dq = torch.matmul(dscores, k)                                            # (B, H, T, hs)
        dk = torch.matmul(dscores.transpose(-2, -1), q)                          # (B, H, T, hs)
        dqkv = torch.cat([t.transpose(1, 2).reshape(b * n, d) for t in (dq, dk, dv)], dim=1)   # (B*T, 3D)
        torch.mm(dqkv.t(), x2, out=g["in_proj_weight"])                          # (3D, D)
        if self.spec.bias:
            torch.sum(dqkv, 0, out=g["in_proj_bias"])
        if not self.need_dx:
            return None
        return torch.mm(dqkv, p["in_proj_weight"]).view(b, n, d)                # (B, T, D)


def _affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x W^T + b for x (M, in), W (out, in)."""
    return torch.addmm(bias, x, weight.t()) if bias is not None else torch.mm(x, weight.t())
