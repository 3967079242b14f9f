"""The job submission, shared: the API validates it and stores it as JSON; the worker and predict
re-read it and build its network with `build_model`, the one place a job becomes a Model."""
from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from engine import Model
from engine.spec import Adam, LossSpec, ModelSpec, OptimizerSpec, TrainConfig

from .preprocessing import Preprocessing, Scaling, model_spec
from .tables import ID_PATTERN

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def first_control_char(text: str) -> int | None:
    """Where `text` holds a control character (NUL, a newline, DEL, ...) or a Unicode format character
    (category Cf: a bidi override such as U+202E that shows a name reversed, a zero-width space), or
    None: names and labels are printable text, and PostgreSQL refuses a NUL in a text column outright."""
    return next((i for i, ch in enumerate(text)
                 if ord(ch) < 32 or 127 <= ord(ch) < 160 or unicodedata.category(ch) == "Cf"), None)


def describe_char(ch: str) -> str:
    """'a control character (U+0000)', 'a format character (U+202E RIGHT-TO-LEFT OVERRIDE)'."""
    what = "a format character" if unicodedata.category(ch) == "Cf" else "a control character"
    name = unicodedata.name(ch, "")
    return f"{what} (U+{ord(ch):04X}{' ' + name if name else ''})"


def _printable(text: str) -> str:
    at = first_control_char(text)
    if at is not None:
        raise ValueError(f"holds {describe_char(text[at])} at position {at}; use printable text")
    return text


# a name a user gives a job or a sweep: for lists and dashboards, need not be unique
Label = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
                  AfterValidator(_printable)]
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


class Distributed(BaseModel):
    """Data parallelism (docs/distributed.md): one job on several processes, each a shard of every batch."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    processes: int = Field(1, ge=1, le=1024, description=(
        "Rank processes training the job together (at most the service's max_processes); batch_size is the "
        "global batch and must divide evenly among them."))
    sync_batchnorm: bool = Field(False, description=(
        "Batchnorm uses the global batch's statistics, all-reduced over the processes (else each process's own, "
        "as torch DDP)."))


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
    context_length: int | None = Field(None, ge=1, le=65_536, description=(
        "A language model (a text dataset) only, and required there: the tokens of each training window, the "
        "model's input length (N, T). Each step draws batch_size windows at seeded random offsets; "
        "`steps_per_epoch` steps make an epoch."))

    preprocessing: Preprocessing = Field(default_factory=Preprocessing, description=(
        "Standardization with the training split's statistics, carried in the model as standardize layers "
        "(docs/datasets.md#scaling)."))
    distributed: Distributed = Field(default_factory=Distributed, description=(
        "Data-parallel training on several processes (torch.distributed): `{\"processes\": 2}`."))

    @model_validator(mode="after")
    def _batch_divides(self) -> "JobRequest":
        n = self.distributed.processes
        if self.batch_size % n:
            raise ValueError(f"batch_size {self.batch_size} does not divide among distributed.processes {n}: "
                             f"use a multiple of {n} (e.g. {n * max(1, round(self.batch_size / n))})")
        return self

    def input_shape(self, dataset_shape: list[int] | tuple[int, ...]) -> tuple[int, ...]:
        """The model's input shape per sample: a text's windows of context_length ids, else the dataset's."""
        return (self.context_length,) if self.context_length is not None else tuple(int(d) for d in dataset_shape)

    def train_config(self) -> TrainConfig:
        return TrainConfig.model_validate(self.model_dump(include=set(TrainConfig.model_fields)))

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]


def served_spec(request: JobRequest, scaling: Scaling | None = None) -> ModelSpec:
    """The network predict runs and the weights describe: the job's, with its preprocessing layers."""
    return model_spec(request.model, request.preprocessing, scaling)


def build_model(request: JobRequest | dict[str, Any], input_shape: tuple[int, ...] | list[int],
                device: str | torch.device = "cpu", compile: bool = False, *, scaling: Scaling | None = None,
                served: bool = True) -> Model:
    """The job's network with its preprocessing layers (core.preprocessing), initialised from its seed, in
    its dtype, on `device`; compile: its norms' formulas through torch.compile (Settings.engine_compile).
    scaling: the training split's statistics (None: identity until the weights are loaded); served=False:
    the network training fits, without the layer that scales a standardized target back."""
    req = request if isinstance(request, JobRequest) else JobRequest.model_validate(request)
    spec = model_spec(req.model, req.preprocessing, scaling, served=served)
    return Model.from_spec(spec, tuple(int(d) for d in input_shape), seed=req.seed,
                           dtype=req.torch_dtype, device=device, compile=compile)
