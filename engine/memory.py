"""How much memory a model needs, from its Plan (shapes only: nothing is allocated).

Counted in elements of the model's dtype per sample, from what each layer keeps between its
forward and its backward (engine/layers: a linear keeps its input, a relu, leaky relu or gelu
its output, a dropout its mask, a norm its x-hat, a max pool (and seq_pool's max) its int64 indices,
self-attention its q, k, v and the heads' weights: batch x heads x T^2), and the
largest set of temporaries alive at once in the backward pass (the incoming dy, the outgoing dx,
a convolution's unfolded input, GELU's second factor). The optimizer adds nothing to its state:
its temporaries go into the spent gradients (Optimizer.step(reuse_grads=True)). An estimate, meant
to err high (tests/engine/test_memory.py checks it against what a step really allocates): it is
what admission refuses a job by, before a worker runs out of memory three times over.

  training step:  batch_size x activation_bytes + parameter_bytes + data_bytes
  inference:      rows x inference_bytes (predict runs in chunks of rows that fit a budget)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .model import INPUT_INDEX, Plan
from .spec import SGD, Adam, AdamW, OptimizerSpec, RMSprop, pair

_INT64 = 8
# a relu / leaky relu keeps its own output, and a linear or conv keeps nothing of its output once
# that activation (its sole reader) has read it: one tensor for the two, counted at the linear / conv
_OUTPUT_KEEPERS, _KEEPS_NO_OUTPUT = ("relu", "leaky_relu"), ("linear", "conv2d", "conv1d")
_NO_NEW_OUTPUT = ("flatten",)                # a view of its input
_TWO_KEPT = ("dropout", "batchnorm", "layernorm")   # the output, and a mask or x-hat of the same size


def _numel(shape) -> int:
    return math.prod(shape)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes, for one sample (activation, inference) or for the whole job (parameters)."""
    activation_bytes: int      # per sample in a training step: forward caches + backward temporaries
    inference_bytes: int       # per sample in an eval-mode forward
    parameter_bytes: int       # parameters, gradients, optimizer state, checkpoint and best copies

    def training_bytes(self, batch_size: int, data_bytes: int = 0) -> int:
        return batch_size * self.activation_bytes + self.parameter_bytes + data_bytes

    def max_batch_size(self, budget: int, data_bytes: int = 0) -> int:
        """The largest batch whose step fits `budget` (0: not even one sample)."""
        return max(0, (budget - self.parameter_bytes - data_bytes) // max(1, self.activation_bytes))


def _kept_bytes(plan: Plan, i: int, item: int) -> int:
    """What layer i holds from its forward until its backward, per sample (its output, mostly)."""
    layer = plan.layers[i]
    n_out = _numel(layer.out_shape)
    j = plan.inputs[i][0]
    if layer.kind in _NO_NEW_OUTPUT:
        return 0
    if layer.kind in _OUTPUT_KEEPERS and j != INPUT_INDEX and plan.layers[j].kind in _KEEPS_NO_OUTPUT \
            and plan.consumers(j) == [i]:
        return 0
    if layer.kind in _TWO_KEPT:
        return 2 * n_out * item
    if layer.kind == "maxpool2d" or (layer.kind == "seq_pool" and layer.spec.mode == "max"):
        return n_out * (item + _INT64)
    if layer.kind == "seq_pool":                 # a mean: each position's weight, (T, 1)
        return (n_out + layer.in_shapes[0][0]) * item
    if layer.kind == "self_attention":
        return _attention_kept(layer) * item
    if layer.kind == "embedding":                # its ids (int64), and its output (read by the next layer)
        return _numel(layer.in_shapes[0]) * _INT64 + n_out * item
    return n_out * item


def _attention_kept(layer) -> int:
    """Elements self-attention keeps per sample: its input, q, k, v, the heads' output and its own output
    (6 x T x D), and the attention weights P, H x T x T (twice with dropout: the mask and P')."""
    t, d = layer.in_shapes[0]
    squares = layer.spec.num_heads * t * t
    return 6 * t * d + squares * (3 if layer.spec.dropout > 0 else 1)


def _temporary_bytes(plan: Plan, i: int, item: int) -> int:
    """Alive at once while layer i runs backward, per sample: dy and dx (each input's), GELU's second
    factor beside them, and for a convolution the unfolded input (C_in x kh x kw values per output
    position)."""
    layer = plan.layers[i]
    n_in = sum(_numel(s) for s in layer.in_shapes)
    elements = _numel(layer.out_shape) + n_in
    if layer.kind == "gelu":
        elements += n_in
    if layer.kind == "conv2d":
        kh, kw = pair(layer.spec.kernel_size)
        elements += layer.in_shapes[0][0] * kh * kw * _numel(layer.out_shape[1:])
    if layer.kind == "conv1d":
        elements += layer.in_shapes[0][0] * layer.spec.kernel_size * layer.out_shape[1]
    if layer.kind == "self_attention":           # dP, dS beside P; dq, dk, dv and their (T, 3D) join
        t, d = layer.in_shapes[0]
        elements += 2 * layer.spec.num_heads * t * t + 6 * t * d
    return elements * item


def optimizer_slots(spec: OptimizerSpec) -> int:
    """State tensors per parameter tensor (each the parameters' size)."""
    if isinstance(spec, SGD):
        return 1 if spec.momentum > 0 else 0
    if isinstance(spec, RMSprop):
        return 1 + (spec.momentum > 0) + spec.centered
    if isinstance(spec, (Adam, AdamW)):
        return 2 + spec.amsgrad
    raise TypeError(f"unknown optimizer spec {spec!r}")


def estimate(plan: Plan, dtype_bytes: int = 4, optimizer: OptimizerSpec | None = None) -> MemoryEstimate:
    """The memory a model of `plan` needs, in a dtype of `dtype_bytes` bytes, trained by `optimizer`."""
    n = len(plan.layers)
    kept = sum(_kept_bytes(plan, i, dtype_bytes) for i in range(n))
    batch_in = _numel(plan.input_shape) * dtype_bytes                 # the gathered input batch
    temporaries = max(_temporary_bytes(plan, i, dtype_bytes) for i in range(n))
    loss = 3 * _numel(plan.output_shape) * dtype_bytes                # probabilities, gradient, scratch
    slots = optimizer_slots(optimizer) if optimizer is not None else 2
    # parameters and gradients, optimizer state, and a state_dict copy each for a checkpoint and the best
    parameters = plan.n_parameters * dtype_bytes * (2 + slots + 2)
    return MemoryEstimate(activation_bytes=batch_in + kept + temporaries + loss,
                          inference_bytes=batch_in + kept + max(_numel(layer.out_shape) for layer in plan.layers)
                          * dtype_bytes, parameter_bytes=parameters)
