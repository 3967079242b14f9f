"""A job's preprocessing: its inputs and / or its regression targets standardized with statistics of
its training split only, carried inside the model as `standardize` layers (engine/layers/standardize.py).

    {"preprocessing": {"standardize": "inputs" | "targets" | "both" | "none"}}

inputs:  the served network is [standardize_inputs, *layers]: mean and std per feature (a column, an
         image's channel) of the training rows (engine.data.split_indices, the split fit makes).
targets: training fits (y - mean) / std with the network as written, so its loss and the metrics fit
         reports (loss, MAE) are in standard deviations of the target (R^2 is unchanged by the scaling).
         The served network, which predict runs, the weights describe and chainrule.twin rebuilds from
         the weights' `model_spec`, ends with `unscale_targets`, a standardize with inverse=True
         (x * std + mean): it answers in the target's own units. It is a layer rather than a step of
         predict so that the weights file alone reproduces a prediction.

A sequential network's keys shift by one with standardize_inputs (layers[0]'s weight is `1.weight`);
a DAG's layers keep their names. Without statistics (`Scaling` None) the layers hold mean 0 and std 1
until a state_dict is loaded: that is how predict rebuilds a trained job's network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from engine.data import check_finite, split_indices, standard_scaling
from engine.spec import INPUT, ModelSpec

STANDARDIZE_INPUTS, UNSCALE_TARGETS = "standardize_inputs", "unscale_targets"   # the layers' names
STANDARDIZE_CHOICES = Literal["inputs", "targets", "both", "none"]


class Preprocessing(BaseModel):
    """What a job does to its data before the network sees it (the `preprocessing` of a job request)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    standardize: STANDARDIZE_CHOICES = Field("none", description=(
        "Scale to mean 0 and std 1 with the training split's statistics: `inputs` (each feature, or "
        "each image channel), `targets` (a regression's target columns; predictions come back in the "
        "target's units), `both`, or `none`. Carried in the model as standardize layers, so the "
        "weights alone reproduce predictions from raw inputs."))

    @property
    def inputs(self) -> bool:
        return self.standardize in ("inputs", "both")

    @property
    def targets(self) -> bool:
        return self.standardize in ("targets", "both")


@dataclass(frozen=True)
class Scaling:
    """The training split's (mean, std) lists: of the input features, of the target columns (or None)."""
    inputs: tuple[list[float], list[float]] | None = None
    targets: tuple[list[float], list[float]] | None = None

    @classmethod
    def of(cls, preprocessing: Preprocessing, X: Tensor, y: Tensor, validation_split: float, seed: int
           ) -> "Scaling":
        """Statistics of the rows fit trains on: X (N, C, ...), y (N,) or (N, k)."""
        check_finite(X, "X")
        if preprocessing.targets:
            check_finite(y, "y")
        train, _ = split_indices(X.shape[0], validation_split, seed)
        return cls(_lists(X.index_select(0, train)) if preprocessing.inputs else None,
                   _lists(y.index_select(0, train)) if preprocessing.targets else None)

    def scale_targets(self, y: Tensor) -> Tensor:
        """y (N,) or (N, k) as training fits it: (y - mean) / std per column, or y itself."""
        if self.targets is None:
            return y
        mean, std = (y.new_tensor(v, dtype=y.dtype) for v in self.targets)
        return ((y.reshape(y.shape[0], -1) - mean) / std).reshape(y.shape)


def _lists(rows: Tensor) -> tuple[list[float], list[float]]:
    """(mean, std) per feature of rows, as the plain lists a standardize layer's spec holds."""
    mean, std = standard_scaling(rows)
    return mean.tolist(), std.tolist()


def _layer(name: str, stats: tuple[list[float], list[float]] | None, **fields) -> dict:
    values = {} if stats is None else {"mean": stats[0], "std": stats[1]}
    return {"type": "standardize", "name": name, **values, **fields}


def model_spec(model: ModelSpec, preprocessing: Preprocessing, scaling: Scaling | None = None, *,
               served: bool = True) -> ModelSpec:
    """The network with its preprocessing layers; served=False leaves out unscale_targets (training)."""
    if not (preprocessing.inputs or (served and preprocessing.targets)):
        return model
    layers = [layer.model_dump(mode="json") for layer in model.layers]
    if preprocessing.inputs:
        if model.is_dag:          # whatever read the input reads it standardized
            for layer in layers:
                if layer["inputs"] is not None:
                    layer["inputs"] = [STANDARDIZE_INPUTS if k == INPUT else k for k in layer["inputs"]]
        layers.insert(0, _layer(STANDARDIZE_INPUTS, scaling.inputs if scaling else None))
    if served and preprocessing.targets:
        layers.append(_layer(UNSCALE_TARGETS, scaling.targets if scaling else None, inverse=True))
    return ModelSpec.model_validate({"layers": layers})
