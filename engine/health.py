"""Per-layer gradient health, measured once per epoch from tensors the engine already holds.

The training loop calls this for ONE step per epoch (the last full-size batch), so the
hot path pays nothing: it runs that step's forward with an `OutputStats` observer
(Model.forward(..., observe=stats)), clones the flat gradients and the flat parameters
before the optimizer update, runs the update, then calls `layer_health`.

For every layer with parameters:
    grad_norm     2-norm of the layer's gradients (before clipping: the raw gradient)
    weight_norm   2-norm of the layer's parameters after the update
    update_ratio  ||w_after - w_before|| / ||w_before||   (0 when ||w_before|| is 0)
For every relu layer (from its output on that batch, seen by `OutputStats`):
    dead_fraction fraction of units (features, or channel x position) that are 0 for
                  every sample of the batch
An observer may add other statistics of a layer's output (engine.diagnostics.ActivationStats:
mean, std, saturated fraction; 0-dim tensors, or 1-D ones that become lists, such as the attention
entropy of each head), merged into that layer's entry. Each entry also has "type"
(the layer's spec type). Output, JSON-ready, in layer order:
    {"0": {"type": "linear", "grad_norm": .., "weight_norm": .., "update_ratio": ..},
     "1": {"type": "relu", "dead_fraction": ..}, ...}
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def param_spans(model) -> list[tuple[str, str, int, int]]:
    """(key, type, start, end) of each layer's slice of `model.flat_params`, for layers with params.

    A layer's parameters are contiguous in the flat storage (the Model allocates them
    layer by layer), so a layer's gradients / weights are one slice of the flat tensors.
    """
    base = model.flat_params.storage_offset()
    spans = []
    for key, layer in model.layer_items():
        if not layer.params:
            continue
        ps = list(layer.params.values())
        start = min(p.storage_offset() for p in ps) - base
        spans.append((key, layer.spec.type, start, start + sum(p.numel() for p in ps)))
    return spans


def dead_fraction(y: Tensor) -> Tensor:
    """Fraction of units of a relu output (N, *unit_shape) that are zero for every sample (0-dim)."""
    if y.shape[0] == 0:
        return torch.zeros((), dtype=torch.float64, device=y.device)
    alive = (y != 0).any(dim=0)                 # (*unit_shape,)
    return 1.0 - alive.to(torch.float64).mean()


class OutputStats:
    """An observer for Model.forward(x, observe=...): statistics of each layer's output on one batch.

    Reduced during the forward to 0-dim tensors on the device (keeping no activation), read back
    once by `layer_health`. Today: `dead_fraction` of every relu.
    """

    def __init__(self) -> None:
        self.dead_fraction: dict[str, Tensor] = {}
        self.stats: dict[str, dict[str, Tensor]] = {}   # more statistics per layer, for subclasses

    def __call__(self, key: str, layer, output: Tensor) -> None:
        if layer.kind == "relu":
            self.dead_fraction[key] = dead_fraction(output)


def to_host(values: list[Tensor]) -> list[Any]:
    """0-dim tensors as floats and 1-D ones as lists of floats (one per attention head, say), read
    back from the device in one transfer."""
    if not values:
        return []
    flat = torch.cat([v.detach().to(torch.float64).reshape(-1) for v in values]).tolist()
    out, at = [], 0
    for v in values:
        n = v.numel()
        out.append(flat[at] if v.dim() == 0 else flat[at:at + n])
        at += n
    return out


def layer_health(model, grads_before: Tensor, params_before: Tensor, outputs: OutputStats,
                 spans: list[tuple[str, str, int, int]] | None = None) -> dict[str, dict[str, Any]]:
    """Health of every layer with parameters and every relu; see the module docstring.

    grads_before: flat gradients of the step (a copy taken before clipping / the update);
    params_before: flat parameters before the update; the model's flat_params are after;
    outputs: what an OutputStats saw in the step's forward.
    """
    spans = param_spans(model) if spans is None else spans
    w_after = model.flat_params
    delta = w_after - params_before
    vals: list[Tensor] = []
    for _, _, start, end in spans:
        vals += [torch.linalg.vector_norm(grads_before[start:end]), torch.linalg.vector_norm(w_after[start:end]),
                 torch.linalg.vector_norm(delta[start:end]), torch.linalg.vector_norm(params_before[start:end])]
    dead = list(outputs.dead_fraction.items())
    more = [(key, name, v) for key, named in outputs.stats.items() for name, v in named.items()]
    numbers = to_host(vals + [f for _, f in dead] + [v for _, _, v in more])
    by_key: dict[str, dict[str, Any]] = {}
    for i, (key, kind, _, _) in enumerate(spans):
        grad_norm, weight_norm, update_norm, weight_norm_before = numbers[4 * i:4 * i + 4]
        by_key[key] = {"type": kind, "grad_norm": grad_norm, "weight_norm": weight_norm,
                       "update_ratio": update_norm / weight_norm_before if weight_norm_before > 0 else 0.0}
    for (key, _), frac in zip(dead, numbers[4 * len(spans):]):
        by_key[key] = {"type": "relu", "dead_fraction": frac}
    types = dict(zip(model.keys, (layer.spec.type for layer in model.layers)))
    for (key, name, _), value in zip(more, numbers[4 * len(spans) + len(dead):]):
        by_key.setdefault(key, {"type": types[key]})[name] = value
    return {key: by_key[key] for key in model.keys if key in by_key}
