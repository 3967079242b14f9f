"""The job submission, shared: the API validates it and stores it as JSON; the worker and predict
re-read it and build its network with `build_model`, the one place a job becomes a Model."""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field

from engine import Model
from engine.spec import Adam, LossSpec, ModelSpec, OptimizerSpec, TrainConfig

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
NAMED_UNIONS = ("loss", "optimizer", "schedule")   # fields that take a bare type name ("loss": "cross_entropy")


def openapi_friendly(schema: dict[str, Any], named: tuple[str, ...] = NAMED_UNIONS) -> None:
    """A model's JSON schema as client generators take it whole: a union property gets no object
    default (a generator cannot build one; the description says what absent means), and the
    properties in `named`, which accept a bare type name, say so."""
    for name, prop in schema.get("properties", {}).items():
        if "discriminator" not in prop:
            continue
        if isinstance(prop.get("default"), dict):
            default = prop.pop("default")
            prop["description"] = f"Absent: {{\"type\": \"{default['type']}\"}} with its defaults."
        if name in named:
            union = {k: prop.pop(k) for k in ("oneOf", "discriminator")}
            names = sorted(union["discriminator"]["mapping"])
            prop["anyOf"] = [{"type": "string", "enum": names, "description": "A type with its defaults."}, union]


class JobRequest(TrainConfig):
    """A training job: a dataset, a network, a loss, an optimizer and the training settings."""
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [{
        "dataset_id": "3f1c2a9e-8d0b-4b8e-9c55-2f8e2a1b7c10",
        "model": {"layers": [
            {"type": "linear", "out_features": 32},
            {"type": "relu"},
            {"type": "linear", "out_features": 3}]},
        "loss": "cross_entropy",
        "optimizer": {"type": "adam", "lr": 0.01},
        "epochs": 20, "batch_size": 32, "validation_split": 0.2, "seed": 0, "device": "auto",
    }]})

    dataset_id: str = Field(min_length=1, max_length=64)
    model: ModelSpec
    loss: LossSpec
    optimizer: OptimizerSpec = Adam(type="adam")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="cuda: the gpu queue; cpu: the cpu queue; auto: whichever worker is free.")
    dtype: Literal["float32", "float64"] = "float32"

    def train_config(self) -> TrainConfig:
        return TrainConfig.model_validate(self.model_dump(include=set(TrainConfig.model_fields)))

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]


def build_model(request: JobRequest | dict[str, Any], input_shape: tuple[int, ...] | list[int],
                device: str | torch.device = "cpu") -> Model:
    """The job's network, initialised from its seed, in its dtype, on `device`."""
    req = request if isinstance(request, JobRequest) else JobRequest.model_validate(request)
    return Model.from_spec(req.model, tuple(int(d) for d in input_shape), seed=req.seed,
                           dtype=req.torch_dtype, device=device)
