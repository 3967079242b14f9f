"""The sequence layers as ONNX operators (onnx_graph.py writes the rest): embedding, position
embedding, multi-head self-attention with its causal mask, pooling over time. T is the job's
sequence length, fixed in the graph as in the input's shape."""
from __future__ import annotations

import math

import numpy as np
import torch

from engine.layers.embedding import sinusoids
from engine.shapes import Shape

from .onnx_graph import Graph, Writer


def _embedding(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    # ids (N, *) -> (N, *, D): rows of the table
    return g.op("Gather", [g.weight(f"{key}.weight"), xs[0]], key, axis=0)


def _position_embedding(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    # x (N, T, D) + the first T rows of the table
    t, dim = shapes[0][0], shapes[0][-1]
    if spec.kind == "learned":
        starts, ends, axes = (g.const(v, key, np.int64) for v in ([0], [t], [0]))
        table = g.op("Slice", [g.weight(f"{key}.weight"), starts, ends, axes], key)
    else:
        table = g.const(sinusoids(spec.max_len, dim, torch.float32, "cpu")[:t].numpy(), key)
    return g.op("Add", [xs[0], table], key)


def _self_attention(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    """softmax(q k^T / sqrt(hs) + mask) v per head, with nn.MultiheadAttention's in_proj / out_proj."""
    t, dim = shapes[0]
    heads = spec.num_heads
    hs = dim // heads
    qkv = g.op("MatMul", [xs[0], g.op("Transpose", [g.weight(f"{key}.in_proj_weight")], key, perm=[1, 0])], key)
    if spec.bias:
        qkv = g.op("Add", [qkv, g.weight(f"{key}.in_proj_bias")], key)          # (N, T, 3D)
    split = g.const([dim, dim, dim], key, np.int64)
    to_heads = g.const([0, t, heads, hs], key, np.int64)
    q, k, v = (g.op("Transpose", [g.op("Reshape", [u, to_heads], key)], key, perm=[0, 2, 1, 3])   # (N, H, T, hs)
               for u in g.ops("Split", [qkv, split], key, 3, axis=2))
    k_t = g.op("Transpose", [k], key, perm=[0, 1, 3, 2])                                          # (N, H, hs, T)
    scores = g.op("Mul", [g.op("MatMul", [q, k_t], key), g.const(1.0 / math.sqrt(hs), key)], key)  # (N, H, T, T)
    if spec.causal:   # -inf above the diagonal: position i reads positions <= i
        mask = np.triu(np.full((t, t), -np.inf, dtype=np.float32), 1)
        scores = g.op("Add", [scores, g.const(mask, key)], key)
    y = g.op("MatMul", [g.op("Softmax", [scores], key, axis=-1), v], key)                       # (N, H, T, hs)
    y = g.op("Reshape", [g.op("Transpose", [y], key, perm=[0, 2, 1, 3]), g.const([0, t, dim], key, np.int64)], key)
    y = g.op("MatMul", [y, g.op("Transpose", [g.weight(f"{key}.out_proj.weight")], key, perm=[1, 0])], key)
    return g.op("Add", [y, g.weight(f"{key}.out_proj.bias")], key) if spec.bias else y


def _seq_pool(g: Graph, key: str, spec, xs: list[str], shapes: list[Shape]) -> str:
    # (N, T, D) -> (N, D); with padding_idx the second input is the ids (N, T) and padding is left out
    if spec.padding_idx is None:
        op = "ReduceMean" if spec.mode == "mean" else "ReduceMax"
        return g.op(op, [xs[0]], key, axes=[1], keepdims=0)
    x, ids = xs
    keep = g.op("Not", [g.op("Equal", [ids, g.const(spec.padding_idx, key, np.int64)], key)], key)  # (N, T)
    keep3 = g.op("Unsqueeze", [keep, g.const([2], key, np.int64)], key)                             # (N, T, 1)
    axis = g.const([1], key, np.int64)
    if spec.mode == "mean":
        weight = g.op("Cast", [keep3], key, to=1)                                                  # float
        total = g.op("ReduceSum", [g.op("Mul", [x, weight], key), axis], key, keepdims=0)         # (N, D)
        count = g.op("Max", [g.op("ReduceSum", [weight, axis], key, keepdims=0), g.const(1.0, key)], key)
        return g.op("Div", [total, count], key)
    masked = g.op("Where", [keep3, x, g.const(-np.inf, key)], key)
    top = g.op("ReduceMax", [masked], key, axes=[1], keepdims=0)                                   # (N, D)
    any_kept = g.op("Cast", [g.op("ReduceMax", [g.op("Cast", [keep3], key, to=1)], key, axes=[1], keepdims=0)],
                    key, to=9)                                                                     # (N, 1) bool
    return g.op("Where", [any_kept, top, g.const(0.0, key)], key)


SEQUENCE_LAYERS: dict[str, Writer] = {
    "embedding": _embedding, "position_embedding": _position_embedding, "self_attention": _self_attention,
    "seq_pool": _seq_pool,
}
