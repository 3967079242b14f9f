"""A sweep as a user sends it (POST /v1/sweeps), validated; stored as JSON on the sweep row and
re-read by the scheduler and the pruning report, wherever they run.

Checks that need the dataset or the service limits (a path that does not exist in the job, a
point whose network does not fit the data, a grid too large) are the API's, at submit.
"""
from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import (AllowInfNan, BeforeValidator, ConfigDict, Field, Strict, StrictInt, field_validator,
                      model_validator)

from engine.spec import Spec

from ..jobspec import JobRequest, Label, openapi_friendly
from ..tables import ID_PATTERN

MAX_PARAMETERS = 32              # dimensions of one search space
Real = Annotated[float, Strict(), AllowInfNan(False)]   # "0.1" and NaN are refused, not coerced; ints pass
PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+|\*))*$")

# the per-epoch metrics engine.fit reports, by task, and the goal each one usually has
METRIC_GOALS = {"train_loss": "minimize", "val_loss": "minimize",
                "train_accuracy": "maximize", "val_accuracy": "maximize",
                "train_mae": "minimize", "val_mae": "minimize", "train_r2": "maximize", "val_r2": "maximize"}
TASK_METRICS = {"classification": ("train_loss", "val_loss", "train_accuracy", "val_accuracy"),
                "regression": ("train_loss", "val_loss", "train_mae", "val_mae", "train_r2", "val_r2")}


class SweepStatus(StrEnum):
    RUNNING = "running"          # trials are queued, running, or still to be created
    SUCCEEDED = "succeeded"      # every trial has ended and at least one succeeded
    FAILED = "failed"            # every trial failed, or the sweep could not go on (dataset deleted)
    CANCELLED = "cancelled"


FORMS = ("choice", "uniform", "log_uniform", "int_uniform")


class Parameter(Spec):
    """One dimension of the search: exactly one of the four forms."""
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [
        {"choice": ["sgd", "adam"]}, {"log_uniform": [1e-4, 1e-1]}, {"uniform": [0.0, 0.5]},
        {"int_uniform": [16, 128]}]})

    choice: list[Any] | None = Field(None, description="Any JSON values, tried as given (grid: each one).")
    uniform: tuple[Real, Real] | None = Field(None, description="[low, high], uniform.")
    log_uniform: tuple[Real, Real] | None = Field(None, description="[low, high], uniform in log space; low > 0.")
    int_uniform: tuple[StrictInt, StrictInt] | None = Field(None, description="[low, high], integers, both included.")

    @model_validator(mode="after")
    def _one_form(self) -> "Parameter":
        given = [name for name in FORMS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of choice, uniform, log_uniform, int_uniform"
                             + (f"; got {', '.join(given)}" if given else ""))
        if self.choice is not None and not self.choice:
            raise ValueError("choice is empty: list at least one value")
        bounds = self.uniform or self.log_uniform or self.int_uniform
        if bounds is not None:
            low, high = bounds
            if low >= high:
                raise ValueError(f"{given[0]}: low {low} must be below high {high}")
            if self.log_uniform is not None and low <= 0:
                raise ValueError(f"log_uniform: low {low} must be above 0 (the search is uniform in log space)")
        return self


class NoPruning(Spec):
    """Every trial trains all its epochs."""
    type: Literal["none"]


class AshaPruning(Spec):
    """Asynchronous successive halving (Optuna's SuccessiveHalvingPruner). Rungs are at epochs
    min_resource × reduction_factor^(min_early_stopping_rate + k); a trial reaching a rung goes on
    only if its metric there is in the best 1/reduction_factor of the trials that reached it."""
    type: Literal["asha"]
    min_resource: StrictInt = Field(1, ge=1, le=100_000, description="Epochs before the first rung.")
    reduction_factor: StrictInt = Field(3, ge=2, le=100)
    min_early_stopping_rate: StrictInt = Field(0, ge=0, le=30)
    bootstrap_count: StrictInt = Field(0, ge=0, le=1000, description="Trials a rung needs before it prunes any.")


class MedianPruning(Spec):
    """The median rule (Optuna's MedianPruner): stop a trial whose best metric so far is worse than
    the median of the finished trials' metric at the same epoch."""
    type: Literal["median"]
    startup_trials: StrictInt = Field(5, ge=0, le=10_000, description="Finished trials before any pruning.")
    warmup_epochs: StrictInt = Field(0, ge=0, le=100_000, description="Epochs a trial runs before it can be pruned.")
    interval_epochs: StrictInt = Field(1, ge=1, le=100_000)
    min_trials: StrictInt = Field(1, ge=1, le=10_000, description="Trials that must have reported the epoch.")


def _type_from_str(v: Any) -> Any:
    return {"type": v} if isinstance(v, str) else v


Pruning = Annotated[Union[NoPruning, AshaPruning, MedianPruning], Field(discriminator="type"),
                    BeforeValidator(_type_from_str)]


class JobTemplate(JobRequest):
    """A job request without its dataset_id: the sweep's dataset is given once, at the top."""
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=lambda schema: openapi_friendly(schema))

    dataset_id: None = Field(None, description="Leave out: the sweep's dataset_id is every trial's.")


def _sweep_schema(schema: dict[str, Any]) -> None:
    openapi_friendly(schema, named=("early_stopping",))
    schema["examples"] = [SWEEP_EXAMPLE]


SWEEP_EXAMPLE = {
    "name": "lr and width",
    "dataset_id": "3f1c2a9e-8d0b-4b8e-9c55-2f8e2a1b7c10",
    "job": {"model": {"layers": [{"type": "linear", "out_features": 64}, {"type": "relu"},
                                 {"type": "linear", "out_features": 3}]},
            "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01}, "epochs": 27},
    "parameters": {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
                   "model.layers.0.out_features": {"choice": [32, 64, 128]}},
    "method": "tpe", "metric": "val_loss", "max_trials": 27, "max_concurrent": 2,
    "early_stopping": {"type": "asha", "min_resource": 1, "reduction_factor": 3}, "seed": 0}


class SweepRequest(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_sweep_schema)

    name: Label
    dataset_id: str = Field(pattern=ID_PATTERN, description="The id (a UUID) of the dataset every trial trains on.")
    job: JobTemplate
    parameters: dict[str, Parameter] = Field(
        min_length=1, max_length=MAX_PARAMETERS,
        description="Dotted paths into `job` (list indices as numbers, `*` for every element) -> a space. "
                    "With `*`, a choice replaces the elements whose value is one of its choices.")
    method: Literal["grid", "random", "tpe"] = "tpe"
    metric: str = Field("val_loss", description="A per-epoch metric: train_loss, val_loss, train_accuracy, "
                        "val_accuracy (classification), train_/val_mae, train_/val_r2 (regression).")
    goal: Literal["minimize", "maximize"] | None = Field(
        None, description="Absent: the metric's own (loss, mae: minimize; accuracy, r2: maximize).")
    max_trials: StrictInt | None = Field(None, ge=1, description="Absent for a grid: every point once.")
    max_concurrent: StrictInt = Field(2, ge=1, le=1000, description="Trials queued or running at once.")
    early_stopping: Pruning = NoPruning(type="none")
    seed: StrictInt = Field(0, ge=0, le=2**32 - 1, description="Same seed, same sweep: the sampler's draws and "
                                                         "the grid's order.")

    @field_validator("parameters")
    @classmethod
    def _paths(cls, parameters: dict[str, Parameter]) -> dict[str, Parameter]:
        for path in parameters:
            if not PATH_RE.match(path):
                raise ValueError(f"parameter path {path!r} is not a dotted path of field names, list indices "
                                 "and '*' (e.g. 'optimizer.lr', 'model.layers.0.out_features')")
        return parameters

    @field_validator("metric")
    @classmethod
    def _metric(cls, metric: str) -> str:
        if metric not in METRIC_GOALS:
            raise ValueError(f"{metric!r} is not a per-epoch metric; valid: {', '.join(METRIC_GOALS)}")
        return metric

    @property
    def direction(self) -> str:
        return self.goal or METRIC_GOALS[self.metric]
