"""The initialization report: "initialization preserves variance across layers", measured at step 0.

One training-mode forward and backward on one batch, before any update. Per layer: the output's
mean and std (and the dead or saturated fraction of an activation), and for layers with a weight,
the std of its gradient. Then, across depth, the std of the last hidden weight layer's output over
the first's: with He initialization on a deep ReLU net it stays near 1, with a bad scale it
collapses or explodes (a factor per layer, compounded). "Hidden weight layers" are the linear and
conv layers but the last one, whose output (the logits) is scaled for the loss, not for a next layer.

    {"batch_size": 32, "loss": 2.31,
     "layers": {"0": {"type": "linear", "output_mean": .., "output_std": 1.41, "grad_std": 0.002}, ...},
     "depth": {"first": {"key": "0", "type": "linear"}, "last": {"key": "36", "type": "linear"},
               "hidden_layers": 19, "activation_std_ratio": 1.07, "grad_std_ratio": 0.93},
     "initial_weights_sha256": "9f2c..."}

The model is left as it was found: batchnorm's running statistics and the dropout generator are
put back, and the gradients it leaves are overwritten by the first training step.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
from torch import Tensor

from ..health import to_host
from .stats import ActivationStats

WEIGHT_LAYERS = ("linear", "conv2d", "conv1d")


def weights_digest(model) -> str:
    """sha256 of the model's flat parameters as stored (dtype and values): proves two sets identical."""
    return hashlib.sha256(model.flat_params.detach().cpu().contiguous().numpy()).hexdigest()


@torch.no_grad()
def init_report(model, loss, x: Tensor, y: Tensor) -> dict[str, Any]:
    """x: (N, *input_shape) and y (targets as the loss takes them) of one batch; see the module docstring."""
    buffers = {k: v.clone() for k, v in model.buffers().items()}
    generator_state = model.generator.get_state()
    stats = ActivationStats()
    try:
        value = loss.forward(model.forward(x, True, observe=stats), y)
        model.backward(loss.backward(), need_input_grad=False)
        grads = model.grads()
        grad_std = {key: grads[f"{key}.weight"].std(correction=0) for key, layer in model.layer_items()
                    if f"{key}.weight" in grads and grads[f"{key}.weight"].numel() > 1}
        layers = _read(model, stats, grad_std)
        loss_value = float(value)
    finally:
        for k, v in model.buffers().items():
            v.copy_(buffers[k])
        model.generator.set_state(generator_state)
    return {"batch_size": int(x.shape[0]), "loss": loss_value, "layers": layers,
            "depth": depth_profile(layers), "initial_weights_sha256": weights_digest(model)}


def _read(model, stats: ActivationStats, grad_std: dict[str, Tensor]) -> dict[str, dict[str, Any]]:
    """Every statistic in one transfer to the host, as {key: {"type", name: float}} in layer order."""
    named = [(key, name, v) for key, d in stats.stats.items() for name, v in d.items()]
    named += [(key, "dead_fraction", v) for key, v in stats.dead_fraction.items()]
    named += [(key, "grad_std", v) for key, v in grad_std.items()]
    values = to_host([v for _, _, v in named])
    layers: dict[str, dict[str, Any]] = {key: {"type": layer.spec.type} for key, layer in model.layer_items()}
    for (key, name, _), v in zip(named, values):
        layers[key][name] = v
    return layers


def _ratio(last: float | None, first: float | None) -> float | None:
    """last / first; from a first std of 0 (zero weights), 0 when the last is 0 too, else infinite."""
    if last is None or first is None or not (math.isfinite(last) and math.isfinite(first)):
        return None
    if first <= 0:
        return 0.0 if last <= 0 else math.inf
    return last / first


def depth_profile(layers: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The last hidden weight layer's output std over the first's (None with fewer than 2 of them)."""
    weighted = [key for key, entry in layers.items() if entry["type"] in WEIGHT_LAYERS]
    hidden = weighted[:-1]                     # the last one is the readout
    if len(hidden) < 2:
        return None
    first, last = layers[hidden[0]], layers[hidden[-1]]
    return {"first": {"key": hidden[0], "type": first["type"]}, "last": {"key": hidden[-1], "type": last["type"]},
            "hidden_layers": len(hidden),
            "activation_std_ratio": _ratio(last.get("output_std"), first.get("output_std")),
            "grad_std_ratio": _ratio(last.get("grad_std"), first.get("grad_std"))}
