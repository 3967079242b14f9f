"""The job submission, shared: the API validates it and stores it as JSON; the worker and predict
re-read it and build its network with `build_model`, the one place a job becomes a Model."""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field

from engine import Model
from engine.spec import Adam, LossSpec, ModelSpec, OptimizerSpec, TrainConfig

from .tables import ID_PATTERN

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class JobRequest(TrainConfig):
    """A training job: a dataset, a network, a loss, an optimizer and the training settings."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_id: str = Field(pattern=ID_PATTERN, description=(
        "The `id` (a UUID) of one of your datasets: upload one with `POST /v1/datasets` and paste the "
        "`id` of its response here."))
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
                device: str | torch.device = "cpu", compile: bool = False) -> Model:
    """The job's network, initialised from its seed, in its dtype, on `device`; compile: its norms'
    formulas through torch.compile (Settings.engine_compile)."""
    req = request if isinstance(request, JobRequest) else JobRequest.model_validate(request)
    return Model.from_spec(req.model, tuple(int(d) for d in input_shape), seed=req.seed,
                           dtype=req.torch_dtype, device=device, compile=compile)
