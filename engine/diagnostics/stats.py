"""Activation statistics: what each layer's output looks like on the batch whose health is measured.

An observer for Model.forward(x, observe=...), run by `fit` on the one step per epoch whose
gradient health it already measures (engine.health), so the other steps pay nothing. Every
number is reduced during the forward to a 0-dim tensor on the device and read back with the
gradient health in one transfer. Per layer:

    output_mean, output_std   of all the layer's outputs on the batch (N x units)
    dead_fraction             relu, leaky_relu: units (features, or channel x position) that are
                              not positive for any sample; they pass back no gradient (relu) or
                              only the negative slope's (leaky_relu)
    saturated_fraction        sigmoid, tanh: outputs where the derivative is below 1% of its
                              maximum: sigma' = y (1 - y) < 0.01 * 1/4,  tanh' = 1 - y^2 < 0.01
    attention_entropy         self_attention: per head (a list of H), the entropy in nats of each
                              query's attention weights, -sum_j P_ij log P_ij, averaged over the
                              batch's queries. 0: every query looks at one token (collapsed);
    attention_entropy_max     its largest possible value, the uniform attention's: log T, or for a
                              causal mask the mean over positions i of log(i + 1)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..health import OutputStats

SATURATION = 0.01        # a derivative below this fraction of the activation's maximum derivative


def saturated_fraction(kind: str, y: Tensor) -> Tensor:
    """Fraction of a sigmoid's / tanh's outputs y (any shape) whose derivative is < 1% of its max (0-dim)."""
    if kind == "sigmoid":
        derivative, peak = y * (1 - y), 0.25            # sigma'(0) = 1/4
    elif kind == "tanh":
        derivative, peak = 1 - y * y, 1.0               # tanh'(0) = 1
    else:
        raise ValueError(f"saturation is measured for sigmoid and tanh, not {kind}")
    return (derivative < SATURATION * peak).to(torch.float64).mean()


def attention_entropy(probs: Tensor) -> Tensor:
    """Mean entropy (nats) of each head's attention rows: P (B, H, T, T) -> (H,). 0 log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(-1).mean(dim=(0, 2))


def uniform_entropy(t: int, causal: bool) -> float:
    """The attention entropy of uniform weights over what a query may see (T keys, or i + 1 causally)."""
    if t <= 0:
        return 0.0
    return math.lgamma(t + 1) / t if causal else math.log(t)        # mean of log(i + 1), i < T: log(T!) / T


def inactive_fraction(y: Tensor) -> Tensor:
    """Fraction of units of an (N, *unit_shape) output that are not positive for any sample (0-dim)."""
    if y.shape[0] == 0:
        return torch.zeros((), dtype=torch.float64, device=y.device)
    return 1.0 - (y > 0).any(dim=0).to(torch.float64).mean()


class ActivationStats(OutputStats):
    """OutputStats (relu dead fractions) plus every layer's output mean and std, leaky_relu dead
    fractions and sigmoid / tanh saturation; `engine.health.layer_health` merges them per layer."""

    def __call__(self, key: str, layer, output: Tensor) -> None:
        super().__call__(key, layer, output)            # relu: dead_fraction
        std, mean = torch.std_mean(output, correction=0) if output.numel() else (output.sum(), output.sum())
        named = {"output_mean": mean, "output_std": std}
        if layer.kind == "leaky_relu":
            named["dead_fraction"] = inactive_fraction(output)
        elif layer.kind in ("sigmoid", "tanh"):
            named["saturated_fraction"] = saturated_fraction(layer.kind, output)
        elif layer.kind == "self_attention" and layer.attention_weights() is not None:
            probs = layer.attention_weights()                       # (B, H, T, T)
            named["attention_entropy"] = attention_entropy(probs)   # (H,)
            named["attention_entropy_max"] = torch.tensor(uniform_entropy(probs.shape[-1], layer.spec.causal),
                                                         dtype=torch.float64)
        self.stats[key] = named
