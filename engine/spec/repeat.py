"""`repeat`: a block of layers written once and stacked `times` times (a 4-block transformer is
one block, not four pasted copies).

    {"type": "repeat", "name": "blocks", "times": 4, "layers": [
        {"type": "layernorm", "name": "ln_1"},
        {"type": "self_attention", "name": "attn", "num_heads": 4},
        {"type": "add", "name": "res_1", "inputs": ["input", "attn"]}, ...]}

Validation expands it into ordinary layers named `blocks.{i}.{inner name}` (an unnamed inner
layer is named by its index in the block), so the weights read `blocks.0.attn.in_proj_weight`
and nest in the torch twin as nanoGPT's `transformer.h.0.attn` do. Inside a block, `inputs`
name the block's own layers, and `input` is the block's input: the model input or the layer
before the repeat for the first block, the previous block's last layer after that. Outside, a
layer may name the repeat itself (`"inputs": ["blocks"]`) for the last block's output.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from .base import Spec
from .layers import INPUT, NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)


def _as_dict(layer: Any) -> Any:
    return layer.model_dump(exclude_none=True) if isinstance(layer, BaseModel) else layer


def _previous_key(flat: list[dict]) -> str:
    """The key of the last expanded layer (its name, else its index: how a DAG keys it), or the input."""
    if not flat:
        return INPUT
    return flat[-1].get("name") or str(len(flat) - 1)


def expand(layers: Any, repeat_type: type[Spec]) -> Any:
    """`layers` (raw dicts) with each repeat replaced by its expanded blocks; anything else as it is.

    repeat_type validates a repeat's own fields first (the 422 then points at them). ValueError
    names the repeat (`layers[k]`) and what is wrong."""
    if not isinstance(layers, list) or not any(isinstance(_as_dict(x), dict) and _as_dict(x).get("type") == "repeat"
                                               for x in layers):
        return layers
    flat: list[dict] = []
    last_of: dict[str, str] = {}                 # a repeat's name -> the key of its last block's last layer
    for k, raw in enumerate(layers):
        layer = _as_dict(raw)
        if not isinstance(layer, dict) or layer.get("type") != "repeat":
            if isinstance(layer, dict) and isinstance(layer.get("inputs"), list):
                layer = {**layer, "inputs": [last_of.get(s, s) if isinstance(s, str) else s for s in layer["inputs"]]}
            flat.append(layer)
            continue
        rep = repeat_type.model_validate(layer)
        block_input = last_of.get(rep.inputs[0], rep.inputs[0]) if rep.inputs else _previous_key(flat)
        for i in range(rep.times):
            block_input = _expand_block(k, rep, i, block_input, flat)
        last_of[rep.name] = block_input
    return flat


def _expand_block(k: int, rep: Any, i: int, block_input: str, flat: list[dict]) -> str:
    """Append block i of repeat layers[k] to `flat`; returns the key of its last layer."""
    local: dict[str, str] = {}                   # inner name -> expanded key
    key = block_input
    for j, inner in enumerate(rep.layers):
        layer = inner.model_dump(exclude_none=True)
        own = layer.get("name") or str(j)
        if own in local:
            raise ValueError(f"layers[{k}] (repeat {rep.name!r}): layers[{j}] name {own!r} is already used "
                             "in the block; names must be unique")
        sources = layer.get("inputs")
        if sources is None:
            ins = [key]                           # the previous layer of the block (or the block input)
        else:
            ins = []
            for src in sources:
                if src != INPUT and src not in local:
                    raise ValueError(f"layers[{k}] (repeat {rep.name!r}): layers[{j}] input {src!r} is not an "
                                     f"earlier layer of the block; valid: {[INPUT, *local]}")
                ins.append(block_input if src == INPUT else local[src])
        if layer.get("tie_to") is not None:
            raise ValueError(f"layers[{k}] (repeat {rep.name!r}): layers[{j}] ties its weight with tie_to; "
                             "a tied layer cannot be repeated (each copy would share one table)")
        key = f"{rep.name}.{i}.{own}"
        if not _NAME.match(key):      # each name is valid alone; the two parts the repeat adds can break it
            raise ValueError(f"layers[{k}] (repeat {rep.name!r}): layers[{j}] becomes {key!r}, not a valid "
                             "layer name: at most 8 dot-separated parts, and the repeat adds two (its name "
                             "and the block's index); shorten the repeat's or the layer's name")
        local[own] = key
        flat.append({**layer, "name": key, "inputs": ins})
    return key

