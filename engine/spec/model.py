"""The model spec: the graph of layers (a sequence, or a DAG with names and `inputs`), its repeats,
tied weights and structural rules; shape rules need the input shape and live in engine.planning."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, model_validator

from .base import Spec
from .layers import INPUT, LayerSpec
from .repeat import expand

MERGE_TYPES = ("add", "concat")


def _check_arity(i: int, layer, ins: list[str]) -> None:
    """A merge reads 2 or more inputs; seq_pool with padding_idx exactly 2 (features, ids); the rest 1."""
    if layer.type in MERGE_TYPES:
        if len(ins) < 2:
            raise ValueError(f"layers[{i}] ({layer.type}): a merge needs at least 2 inputs, got {ins}")
    elif layer.type == "seq_pool" and layer.padding_idx is not None:
        if len(ins) != 2 or ins[1] != INPUT:
            raise ValueError(f"layers[{i}] (seq_pool): with padding_idx it takes exactly 2 inputs, the features "
                             f"(N, T, D) and the model input's token ids (N, T), e.g. \"inputs\": [\"emb\", "
                             f"\"{INPUT}\"]; got {ins}")
    elif len(ins) != 1:
        hint = "; seq_pool reads token ids as a second input only with padding_idx" if layer.type == "seq_pool" else ""
        raise ValueError(f"layers[{i}] ({layer.type}): takes exactly 1 input, got {ins}{hint}")


class Repeat(Spec):
    """A block of layers stacked `times` times; expanded at validation (engine/spec/repeat.py) into
    layers named `{name}.{i}.{inner name}`, so it never reaches a Model."""
    type: Literal["repeat"]
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description="Prefix of the blocks' layers.")
    times: int = Field(ge=1, le=256, description="How many copies of the block, stacked.")
    layers: list[LayerSpec] = Field(min_length=1, max_length=200)
    inputs: list[str] | None = Field(None, min_length=1, max_length=1, description=(
        "The layer feeding the first block; absent: the previous layer."))


# what a user may write in `layers`: a layer, or a repeat of a block of them
LayerOrRepeat = Annotated[Union[LayerSpec, Repeat], Field(discriminator="type")]


class ModelSpec(Spec):
    # after validation only layers: a repeat is expanded by `_expand_repeats`
    layers: list[LayerOrRepeat] = Field(min_length=1, max_length=1000)

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [{
        "layers": [
            {"type": "linear", "out_features": 64, "init": "he_normal"},
            {"type": "relu"},
            {"type": "dropout", "p": 0.1},
            {"type": "linear", "out_features": 3},
        ]}]})

    @model_validator(mode="before")
    @classmethod
    def _expand_repeats(cls, data: Any) -> Any:
        if isinstance(data, dict) and "layers" in data:
            return {**data, "layers": expand(data["layers"], Repeat)}
        return data

    @property
    def is_dag(self) -> bool:
        return any(layer.inputs is not None for layer in self.layers)

    def keys(self) -> list[str]:
        """The state_dict prefix of each layer: its index in a sequence, its name in a DAG."""
        if not self.is_dag:
            return [str(i) for i in range(len(self.layers))]
        return [layer.name or str(i) for i, layer in enumerate(self.layers)]

    def input_keys(self) -> list[list[str]]:
        """For each layer, the keys (or INPUT) of the layers it reads."""
        keys = self.keys()
        out = []
        for i, layer in enumerate(self.layers):
            if layer.inputs is not None:
                out.append(list(layer.inputs))
            else:
                out.append([keys[i - 1] if i else INPUT])
        return out

    @model_validator(mode="after")
    def _check_graph(self) -> "ModelSpec":
        keys = self.keys()
        # explicit names must be unique in every spec; in a DAG the derived keys must be too
        labels = [(i, layer.name) for i, layer in enumerate(self.layers) if layer.name is not None]
        if self.is_dag:
            labels = list(enumerate(keys))
        first: dict[str, int] = {}
        for i, k in labels:
            if k == INPUT:
                raise ValueError(f"layers[{i}]: name {k!r} is reserved for the model input")
            if k in first:
                raise ValueError(f"layers[{i}]: name {k!r} is already used by layers[{first[k]}]; "
                                 "names must be unique")
            first[k] = i
        seen = {k: i for i, k in enumerate(keys)}
        consumed: set[str] = set()
        for i, (layer, ins) in enumerate(zip(self.layers, self.input_keys())):
            for src in ins:
                if src != INPUT and (src not in seen or seen[src] >= i):
                    valid = [INPUT] + keys[:i]
                    raise ValueError(f"layers[{i}] ({layer.type}): input {src!r} is not an earlier layer; "
                                     f"valid inputs here: {valid}")
                consumed.add(src)
            _check_arity(i, layer, ins)
            if layer.type == "softmax" and i != len(self.layers) - 1:
                raise ValueError(f"layers[{i}] (softmax): softmax is only allowed as the final layer")
        for i, k in enumerate(keys[:-1]):
            if self.is_dag and k not in consumed:
                raise ValueError(f"layers[{i}] ({self.layers[i].type}): output {k!r} is never used; "
                                 "every layer but the last must feed another")
        return self

    def tied_index(self, index: int) -> int | None:
        """The index of the embedding layers[index] ties its weight to (by name), or None."""
        target = getattr(self.layers[index], "tie_to", None)
        if target is None:
            return None
        return next((j for j, layer in enumerate(self.layers[:index]) if layer.name == target), None)

    @model_validator(mode="after")
    def _check_ties(self) -> "ModelSpec":
        """tie_to names an earlier embedding, and no table is tied twice (shapes: engine.planning)."""
        tied: dict[int, int] = {}
        for i, layer in enumerate(self.layers):
            if getattr(layer, "tie_to", None) is None:
                continue
            j = self.tied_index(i)
            if j is None or self.layers[j].type != "embedding":
                embeddings = [lay.name for lay in self.layers[:i] if lay.type == "embedding" and lay.name]
                raise ValueError(f"layers[{i}] (linear): tie_to {layer.tie_to!r} is not the name of an earlier "
                                 f"embedding layer; valid: {embeddings or 'none (name an embedding layer before it)'}")
            if j in tied:
                raise ValueError(f"layers[{i}] (linear): embedding {layer.tie_to!r} is already tied to "
                                 f"layers[{tied[j]}]")
            tied[j] = i
        return self
