"""Where each head looks: the attention weights P of one sequence, per self_attention layer and head.

    maps = attention_maps(model, ids)        # ids (T,) int64, T <= the model's context
    maps["blocks.0.attn"]                    # (H, T, T): row i is query i's weights over the keys

An eval-mode forward (no dropout; batchnorm on its running statistics), keeping nothing: a training
step in flight is undisturbed. Row i of a causal head is 0 after column i.
"""
from __future__ import annotations

import torch
from torch import Tensor


def attention_layers(model) -> list[str]:
    """The keys of the model's self_attention layers, in layer order."""
    return [key for key, layer in model.layer_items() if layer.kind == "self_attention"]


@torch.no_grad()
def attention_maps(model, ids: Tensor) -> dict[str, Tensor]:
    """{layer key: P (H, T, T)} for one sequence of token ids (T,)."""
    if ids.dim() != 1 or ids.numel() == 0:
        raise ValueError(f"attention maps are of one sequence of ids (T,), got shape {tuple(ids.shape)}")
    x = ids.to(model.device, model.input_dtype).unsqueeze(0)                 # (1, T)
    model.check_ids(x)
    maps: dict[str, Tensor] = {}

    def grab(key: str, layer, output: Tensor) -> None:
        if layer.kind == "self_attention":
            maps[key] = layer.attention_weights()[0].clone()                 # (H, T, T)

    model.forward(x, training=False, observe=grab)
    return maps
