"""Weight initialization, as torch.nn.init computes it, drawn from a seeded generator.

Values are drawn in float64 on the CPU and copied into the parameter, so the same
seed gives the same weights on every device (float32 weights are the rounded float64).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

SCHEMES = ("xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "zeros", "torch_default")


def calculate_gain(activation: str, param: float | None = None) -> float:
    """torch.nn.init.calculate_gain for the activations the engine has."""
    if activation in ("linear", "identity", "sigmoid", "softmax", "gelu"):
        return 1.0
    if activation == "tanh":
        return 5.0 / 3
    if activation == "relu":
        return math.sqrt(2.0)
    if activation == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    raise ValueError(f"no gain for activation {activation!r}")


def _uniform(shape, bound: float, g: torch.Generator) -> Tensor:
    return torch.empty(shape, dtype=torch.float64).uniform_(-bound, bound, generator=g)


def _normal(shape, std: float, g: torch.Generator) -> Tensor:
    return torch.empty(shape, dtype=torch.float64).normal_(0.0, std, generator=g)


@torch.no_grad()
def init_weight(weight: Tensor, scheme: str, gain: float, fan_in: int, fan_out: int,
                g: torch.Generator) -> None:
    """Fill `weight` in place. He uses fan_in (torch's kaiming default mode)."""
    shape = tuple(weight.shape)
    if scheme == "zeros":
        weight.zero_()
        return
    if scheme == "xavier_uniform":
        w = _uniform(shape, gain * math.sqrt(6.0 / (fan_in + fan_out)), g)
    elif scheme == "xavier_normal":
        w = _normal(shape, gain * math.sqrt(2.0 / (fan_in + fan_out)), g)
    elif scheme == "he_uniform":
        w = _uniform(shape, gain * math.sqrt(3.0 / fan_in), g)
    elif scheme == "he_normal":
        w = _normal(shape, gain / math.sqrt(fan_in), g)
    elif scheme == "torch_default":
        # nn.Linear / nn.Conv2d: kaiming_uniform_(a=sqrt(5)) -> bound = 1/sqrt(fan_in)
        w = _uniform(shape, 1.0 / math.sqrt(fan_in), g)
    else:
        raise ValueError(f"unknown init {scheme!r}; valid: {', '.join(SCHEMES)}")
    weight.copy_(w)


@torch.no_grad()
def init_bias(bias: Tensor, scheme: str, fan_in: int, g: torch.Generator) -> None:
    """torch_default draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch.nn does; the rest start at 0."""
    if scheme == "torch_default":
        bias.copy_(_uniform(tuple(bias.shape), 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, g))
    else:
        bias.zero_()
