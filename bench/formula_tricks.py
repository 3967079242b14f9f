"""The --tricks rows of the layers' and the optimizer's formula choices (issue 9), each against the
plain form it replaced; tests/engine/test_fast_formulas.py and test_step_memory.py check that
both give the same numbers.

- norm statistics as sums of shifted data (batchnorm_train_forward, layernorm_forward) against
  torch.var_mean, whose one-pass update is many times slower on this CPU.
- leaky_relu's derivative clamp(sign(y), slope, 1) * dy against torch.where(y > 0, dy, slope * dy).
- GELU's backward from its step y / x and exp2, against erf and exp evaluated again.
- conv's dx through the transposed convolution's kernel, against torch.nn.grad.conv2d_input.
- average pooling over windows that tile the input: dx copied over each window against the
  transposed convolution, and the 2x2 forward as four strided views against F.avg_pool2d.
- an activation's dx written into its own spent output (Layer.reuse_output) against a fresh tensor.
- the optimizer's temporaries in the spent gradients (reuse_grads) against fresh ones each step.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input as torch_conv2d_input

from bench.engine_tricks import best_us, row
from engine import Model, optim
from engine.layers.activation import leaky_relu_derivative
from engine.layers.conv import conv2d_input
from engine.layers.norm import batchnorm_train_forward, layernorm_forward
from engine.layers.pool import avg_pool_2x2, avg_pool_input, avg_pool_input_tiled

_IMAGE, _ROWS = (64, 32, 32, 32), (256, 512)


def _batchnorm_var_mean(x, weight, bias, eps, dims, bc):
    var, mean = torch.var_mean(x, dims, correction=0)
    xhat = (x - mean.view(bc)) * torch.rsqrt(var + eps).view(bc)
    return torch.addcmul(bias.view(bc), xhat, weight.view(bc))


def _layernorm_var_mean(x, weight, bias, eps):
    var, mean = torch.var_mean(x, -1, keepdim=True, correction=0)
    return torch.addcmul(bias, (x - mean) * torch.rsqrt(var + eps), weight)


def norm_statistics_rows(rounds, round_s) -> list[dict[str, Any]]:
    out = []
    for shape, dims, bc in ((_IMAGE, (0, 2, 3), (1, -1, 1, 1)), ((256, 512), (0,), (1, -1))):
        x, w, b = torch.randn(shape), torch.rand(shape[1]), torch.randn(shape[1])
        us = best_us({"shifted sums": lambda: batchnorm_train_forward(x, w, b, 1e-5, dims, bc),
                      "var_mean": lambda: _batchnorm_var_mean(x, w, b, 1e-5, dims, bc)}, rounds, round_s)
        out.append(row("norm statistics (forward)", f"batchnorm {shape}", "shifted sums", "var_mean", us))
    x, w, b = torch.randn(_ROWS), torch.rand(_ROWS[1]), torch.randn(_ROWS[1])
    us = best_us({"shifted sums": lambda: layernorm_forward(x, w, b, 1e-5),
                  "var_mean": lambda: _layernorm_var_mean(x, w, b, 1e-5)}, rounds, round_s)
    return out + [row("norm statistics (forward)", f"layernorm {_ROWS}", "shifted sums", "var_mean", us)]


def leaky_relu_rows(rounds, round_s) -> list[dict[str, Any]]:
    out = []
    for shape in (_IMAGE, _ROWS):
        y, dy = F.leaky_relu(torch.randn(shape), 0.01), torch.randn(shape)
        us = best_us({"clamp(sign(y))": lambda: leaky_relu_derivative(y, 0.01, torch.empty_like(y)).mul_(dy),
                      "where(y>0,..)": lambda: torch.where(y > 0, dy, dy * 0.01)}, rounds, round_s)
        out.append(row("leaky_relu backward formula", f"{shape}", "clamp(sign(y))", "where(y>0,..)", us))
    return out


def _gelu_plain(x, dy, approximate):
    if approximate == "none":
        return dy * (0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))
    k, c = math.sqrt(2 / math.pi), 0.044715
    t = torch.tanh(k * x * (1 + c * x * x))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * c * x * x))


def gelu_rows(rounds, round_s) -> list[dict[str, Any]]:
    out = []
    for approximate in ("none", "tanh"):
        model = Model.from_spec({"layers": [{"type": "gelu", "approximate": approximate}]}, _ROWS[1:])
        layer, x, dy = model.layers[0], torch.randn(_ROWS), torch.randn(_ROWS)
        y = F.gelu(x, approximate=approximate)

        def ours():
            layer.cache = x, y
            return layer.backward(dy)
        us = best_us({"step y / x": ours, "erf / tanh again": lambda: _gelu_plain(x, dy, approximate)},
                     rounds, round_s)
        out.append(row("GELU backward formula", f"{approximate} {_ROWS}", "step y / x", "erf / tanh again", us))
    return out


def conv_input_rows(rounds, round_s) -> list[dict[str, Any]]:
    out = []
    for n, c, h, o, stride in ((64, 32, 16, 64, 1), (64, 16, 32, 32, 2), (64, 8, 14, 16, 1)):
        x, w = torch.randn(n, c, h, h), torch.randn(o, c, 3, 3)
        dy = torch.randn(F.conv2d(x, w, stride=stride, padding=1).shape)
        us = best_us({"conv_transpose2d": lambda: conv2d_input(dy, w, (h, h), (stride, stride), (1, 1)),
                      "nn.grad": lambda: torch_conv2d_input(x.shape, w, dy, stride=stride, padding=1)},
                     rounds, round_s)
        out.append(row("conv dx", f"x {(n, c, h, h)} W {(o, c, 3, 3)} s{stride}", "conv_transpose2d", "nn.grad", us))
    return out


def avg_pool_rows(rounds, round_s) -> list[dict[str, Any]]:
    out = []
    for shape, k in ((_IMAGE, 2), ((64, 64, 8, 8), 2), ((64, 16, 16, 16), 8)):
        x = torch.randn(shape)
        dy = F.avg_pool2d(x, k)
        us = best_us({"tiled copy": lambda: avg_pool_input_tiled(dy, (k, k), shape[2:]),
                      "conv_transpose2d": lambda: avg_pool_input(dy, (k, k), (k, k), (0, 0), shape[2:])},
                     rounds, round_s)
        out.append(row("avg pool dx", f"x {shape} k{k}", "tiled copy", "conv_transpose2d", us))
    for shape in (_IMAGE, (64, 64, 8, 8)):
        x = torch.randn(shape)
        us = best_us({"strided views": lambda: avg_pool_2x2(x), "F.avg_pool2d": lambda: F.avg_pool2d(x, 2)},
                     rounds, round_s)
        out.append(row("avg pool 2x2 (forward)", f"x {shape}", "strided views", "F.avg_pool2d", us))
    return out


def reuse_output_rows(rounds, round_s) -> list[dict[str, Any]]:
    y, spent, dy = F.leaky_relu(torch.randn(_IMAGE), 0.01), torch.randn(_IMAGE), torch.randn(_IMAGE)
    us = best_us({"into y": lambda: leaky_relu_derivative(spent, 0.01, spent).mul_(dy),
                  "fresh tensor": lambda: leaky_relu_derivative(y, 0.01, torch.empty_like(y)).mul_(dy)},
                 rounds, round_s)
    return [row("dx into the spent output (reuse_output)", f"leaky_relu {_IMAGE}", "into y", "fresh tensor", us)]


def reuse_grads_rows(rounds, round_s) -> list[dict[str, Any]]:
    out = []
    for n in (101_770, 2_109_450):                                    # the MNIST and the wide MLP
        params, grads = [torch.randn(n), torch.randn(n)], torch.randn(n)
        opts = [optim.make({"type": "adam", "lr": 1e-3}, {"w": p}) for p in params]
        us = best_us({"into grads": lambda: opts[0].step(grads, reuse_grads=True),
                      "fresh": lambda: opts[1].step(grads)}, rounds, round_s)
        out.append(row("Adam temporaries (reuse_grads)", f"{n:,} parameters", "into grads", "fresh", us))
    return out


def rows(rounds, round_s) -> list[dict[str, Any]]:
    return (norm_statistics_rows(rounds, round_s) + leaky_relu_rows(rounds, round_s) + gelu_rows(rounds, round_s)
            + conv_input_rows(rounds, round_s) + avg_pool_rows(rounds, round_s) + reuse_output_rows(rounds, round_s)
            + reuse_grads_rows(rounds, round_s))
