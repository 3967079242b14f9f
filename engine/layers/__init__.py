"""Layer catalogue: spec `type` -> implementing class (module, class name), imported on use."""
from __future__ import annotations

import importlib

from .base import Layer, Merge, Shape, ShapeError

_REGISTRY: dict[str, tuple[str, str]] = {
    "linear": ("linear", "Linear"),
    "conv2d": ("conv", "Conv2d"),
    "conv1d": ("conv", "Conv1d"),
    "seq_pool": ("seq_pool", "SeqPool"),
    "maxpool2d": ("pool", "MaxPool2d"),
    "avgpool2d": ("pool", "AvgPool2d"),
    "flatten": ("flatten", "Flatten"),
    "batchnorm": ("norm", "BatchNorm"),
    "layernorm": ("norm", "LayerNorm"),
    "dropout": ("dropout", "Dropout"),
    "relu": ("relu", "ReLU"),
    "leaky_relu": ("activation", "LeakyReLU"),
    "sigmoid": ("activation", "Sigmoid"),
    "tanh": ("activation", "Tanh"),
    "gelu": ("activation", "GELU"),
    "softmax": ("activation", "Softmax"),
    "add": ("merge", "Add"),
    "concat": ("merge", "Concat"),
    "embedding": ("embedding", "Embedding"),
    "position_embedding": ("embedding", "PositionEmbedding"),
    "self_attention": ("attention", "SelfAttention"),
    "standardize": ("standardize", "Standardize"),
}


def layer_class(kind: str) -> type[Layer]:
    try:
        module, name = _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown layer type {kind!r}; valid: {', '.join(sorted(_REGISTRY))}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["Layer", "Merge", "Shape", "ShapeError", "layer_class"]
