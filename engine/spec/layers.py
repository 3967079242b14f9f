"""Layer specs: one pydantic model per layer type, torch.nn's names and defaults; `LayerSpec` is their union.
The graph they form, and its rules, is engine/spec/model.py."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .base import Real, Spec

INPUT = "input"  # the name a DAG layer uses in `inputs` to read the model's input

InitName = Literal["xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "zeros", "torch_default"]
# an int or an (h, w) pair, as torch's Conv2d / MaxPool2d accept
Size2 = Union[Annotated[int, Field(ge=1)], tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]]
Pad2 = Union[Annotated[int, Field(ge=0)], tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]]


def pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# a layer name; dotted segments are what a `repeat` expands to ("blocks.0.attn"), and nest in the twin
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z0-9_]{1,64}){0,7}$"


class LayerBase(Spec):
    name: str | None = Field(
        None, pattern=NAME_PATTERN,
        description="Layer name; in a DAG it prefixes the layer's weights (`block1.weight`) "
                    "and is what other layers list in `inputs`.")
    inputs: list[str] | None = Field(
        None, min_length=1,
        description="Names of the layers feeding this one (`input` is the model input). "
                    "Absent: the previous layer. Giving it anywhere makes the spec a DAG.")


class Linear(LayerBase):
    """Acts on the last dim: (N, *, in) -> (N, *, out_features), as torch.nn.Linear."""
    type: Literal["linear"]
    out_features: int = Field(ge=1, le=1_000_000)
    bias: bool = True
    init: InitName | None = Field(None, description="Absent: He for layers feeding ReLU, "
                                                    "Xavier for tanh/sigmoid, else torch_default.")
    tie_to: str | None = Field(None, description=(
        "Name of an earlier `embedding` whose table this layer's weight is (weight tying, as nanoGPT's "
        "lm_head): out_features = num_embeddings, in_features = embedding_dim. The state_dict names "
        "the shared tensor under both layers, as torch does."))


class Embedding(LayerBase):
    """torch.nn.Embedding: integer ids (N, *) -> (N, *, embedding_dim). Reads the model input's ids."""
    type: Literal["embedding"]
    num_embeddings: int = Field(ge=1, le=1_000_000)
    embedding_dim: int = Field(ge=1, le=65_536)
    padding_idx: int | None = Field(None, ge=0, description="This id's row starts at zero and gets no "
                                                            "gradient (torch.nn.Embedding's padding_idx).")
    init_std: Real | None = Field(None, gt=0, le=10, description="Absent: N(0, 1), torch's default; "
                                                                 "nanoGPT uses 0.02.")

    @model_validator(mode="after")
    def _padding(self) -> "Embedding":
        if self.padding_idx is not None and self.padding_idx >= self.num_embeddings:
            raise ValueError(f"padding_idx {self.padding_idx} is not an id; valid: 0..{self.num_embeddings - 1}")
        return self


class PositionEmbedding(LayerBase):
    """Adds each position's vector to (N, T, D), T <= max_len: a learned (max_len, D) table
    (nanoGPT's wpe), or the fixed sinusoids of "Attention is all you need"."""
    type: Literal["position_embedding"]
    max_len: int = Field(ge=1, le=65_536)
    kind: Literal["learned", "sinusoidal"] = "learned"
    init_std: Real | None = Field(None, gt=0, le=10, description="learned only; absent: N(0, 1).")


class SelfAttention(LayerBase):
    """Multi-head self-attention on (N, T, D): torch.nn.MultiheadAttention(D, num_heads,
    batch_first=True) called as attn(x, x, x), with the causal mask when `causal`."""
    type: Literal["self_attention"]
    num_heads: int = Field(1, ge=1, le=1024)
    causal: bool = True
    dropout: Real = Field(0.0, ge=0, lt=1, description="On the attention weights, in training.")
    bias: bool = True


class Conv2d(LayerBase):
    type: Literal["conv2d"]
    out_channels: int = Field(ge=1, le=65_536)
    kernel_size: Size2
    stride: Size2 = 1
    padding: Pad2 = 0
    bias: bool = True
    init: InitName | None = None


class Conv1d(LayerBase):
    """torch.nn.Conv1d on (N, C, L): channels first, so (N, T, D) features need their D moved to dim 1."""
    type: Literal["conv1d"]
    out_channels: int = Field(ge=1, le=65_536)
    kernel_size: int = Field(ge=1, le=4096)
    stride: int = Field(1, ge=1, le=4096)
    padding: int = Field(0, ge=0, le=4096)
    dilation: int = Field(1, ge=1, le=4096)
    bias: bool = True
    init: InitName | None = None


class MaxPool2d(LayerBase):
    type: Literal["maxpool2d"]
    kernel_size: Size2
    stride: Size2 | None = Field(None, description="Absent: kernel_size, as in torch.")
    padding: Pad2 = 0


class AvgPool2d(LayerBase):
    type: Literal["avgpool2d"]
    kernel_size: Size2
    stride: Size2 | None = None
    padding: Pad2 = 0


class Flatten(LayerBase):
    type: Literal["flatten"]
    start_dim: int = 1
    end_dim: int = -1


class BatchNorm(LayerBase):
    """BatchNorm1d on (N, C) input, BatchNorm2d on (N, C, H, W): chosen by input rank."""
    type: Literal["batchnorm"]
    eps: Real = Field(1e-5, gt=0, le=1)
    momentum: Real = Field(0.1, gt=0, le=1)
    affine: bool = True


class LayerNorm(LayerBase):
    """Normalizes over the last dimension."""
    type: Literal["layernorm"]
    eps: Real = Field(1e-5, gt=0, le=1)
    elementwise_affine: bool = True


class Dropout(LayerBase):
    type: Literal["dropout"]
    p: Real = Field(0.5, ge=0, lt=1)


class ReLU(LayerBase):
    type: Literal["relu"]


class LeakyReLU(LayerBase):
    type: Literal["leaky_relu"]
    negative_slope: Real = Field(0.01, ge=0, lt=1)


class Sigmoid(LayerBase):
    type: Literal["sigmoid"]


class Tanh(LayerBase):
    type: Literal["tanh"]


class GELU(LayerBase):
    type: Literal["gelu"]
    approximate: Literal["none", "tanh"] = "none"


class Softmax(LayerBase):
    """Only as the final layer, to output probabilities; train on logits instead."""
    type: Literal["softmax"]
    dim: int = -1


class Add(LayerBase):
    """Elementwise sum of its inputs (a residual connection)."""
    type: Literal["add"]


class Concat(LayerBase):
    """Concatenation of its inputs along `dim` (1 = features / channels)."""
    type: Literal["concat"]
    dim: int = 1


class SeqPool(LayerBase):
    """Pooling over time, (N, T, D) -> (N, D). With padding_idx it reads two inputs, the features and
    the token ids (N, T) (`"inputs": ["emb", "input"]`), and pools over the non-padding positions only;
    an all-padding row gives 0."""
    type: Literal["seq_pool"]
    mode: Literal["mean", "max"] = "mean"
    padding_idx: int | None = Field(None, description="The id whose positions are left out; needs the ids "
                                                      "as the second input.")


Positive = Annotated[Real, Field(gt=0)]


class Standardize(LayerBase):
    """y = (x - mean) / std per feature (dim 1: a column of (N, D), a channel of (N, C, H, W)); with
    inverse, y = x * std + mean. mean and std are fixed buffers, not parameters (engine/layers/standardize.py)."""
    type: Literal["standardize"]
    mean: list[Real] | None = Field(None, min_length=1, max_length=1_000_000, description=(
        "One per feature. Absent (with std): 0 and 1 until the state_dict is loaded; a job's "
        "preprocessing.standardize fills them from its training split."))
    std: list[Positive] | None = Field(None, min_length=1, max_length=1_000_000, description="One per feature, > 0.")
    inverse: bool = Field(False, description="Scale back: y = x * std + mean (a standardized target's units).")

    @model_validator(mode="after")
    def _both(self) -> "Standardize":
        if (self.mean is None) != (self.std is None):
            raise ValueError("standardize: give both mean and std, or neither (0 and 1 until a state_dict is loaded)")
        if self.mean is not None and len(self.mean) != len(self.std):
            raise ValueError(f"standardize: mean has {len(self.mean)} values and std {len(self.std)}; "
                             "give one of each per feature")
        return self


LayerSpec = Annotated[
    Union[Linear, Conv2d, MaxPool2d, AvgPool2d, Flatten, BatchNorm, LayerNorm, Dropout,
          ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax, Add, Concat,
          Conv1d, SeqPool, Standardize,
          Embedding, PositionEmbedding, SelfAttention],
    Field(discriminator="type"),
]
