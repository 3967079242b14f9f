"""POST /v1/gradcheck, the service's side: the batch (random inputs, or seeded rows of a dataset), the
targets for the loss, and the limits (core.settings) checked before anything runs. The check itself
is engine.gradcheck, run here, in the API process, in float64.

Each refusal is a Rejection (core.admission) naming the limit, the value and what would fit.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from core import artifacts
from core.admission import Rejection, readable_bytes
from core.settings import Settings
from core.tables import Dataset
from engine import Model, check_compatible, losses, plan
from engine.gradcheck import GradcheckTimeout, gradcheck
from engine.memory import estimate
from engine.spec import SGD

from .analysis_schemas import GradcheckRequest

CLASSIFICATION = ("cross_entropy", "bce_with_logits")


def _limit(value: int, limit: int, field: str, setting: str, what: str) -> None:
    if value > limit:
        raise Rejection(422, ["body", field], f"{what} is {value:,}, over the limit of {limit:,} ({setting})",
                        "limit_exceeded")


def _check_limits(req: GradcheckRequest, input_shape: tuple[int, ...], settings: Settings) -> None:
    _limit(req.batch_size, settings.gradcheck_max_batch_size, "batch_size", "gradcheck_max_batch_size",
           "batch_size")
    _limit(req.coordinates, settings.gradcheck_max_coordinates, "coordinates", "gradcheck_max_coordinates",
           "coordinates (per tensor)")
    graph = plan(req.model, input_shape)       # SpecError: a 422 naming the layer and both shapes
    _limit(graph.n_parameters, settings.gradcheck_max_parameters, "model", "gradcheck_max_parameters",
           "the number of trainable parameters")
    need = estimate(graph, 8, SGD(type="sgd")).activation_bytes * req.batch_size
    need += 8 * req.batch_size * math.prod(input_shape)
    if need > settings.gradcheck_max_memory_bytes:
        raise Rejection(422, ["body", "batch_size"], f"a float64 forward and backward of batch_size "
                        f"{req.batch_size} needs about {readable_bytes(need)}, over the limit of "
                        f"{readable_bytes(settings.gradcheck_max_memory_bytes)} (gradcheck_max_memory_bytes): "
                        "use a smaller batch_size or network", "limit_exceeded")


def _compatible(req: GradcheckRequest, output_shape: tuple[int, ...], task: str, n_outputs: int | None) -> None:
    classification = task == "classification"
    try:
        check_compatible(req.loss, task, n_outputs if classification else None, output_shape,
                         n_targets=None if classification else n_outputs)
    except ValueError as e:
        raise Rejection(422, ["body", "loss"], str(e), "incompatible_loss") from None


def random_batch(req: GradcheckRequest, model: Model, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Seeded N(0, 1) inputs and targets the loss takes: class ids, 0 / 1, or N(0, 1) values."""
    out = tuple(model.output_shape)
    task = "classification" if req.loss.type in CLASSIFICATION else "regression"
    width = out[0] if len(out) == 1 else None
    _compatible(req, out, task, (2 if req.loss.type == "bce_with_logits" else width) if width else None)
    x = torch.randn((req.batch_size, *model.input_shape), generator=g, dtype=torch.float64)
    if req.loss.type == "cross_entropy":
        return x, torch.randint(0, out[0], (req.batch_size,), generator=g)
    if req.loss.type == "bce_with_logits":
        return x, torch.randint(0, 2, (req.batch_size, 1), generator=g).to(torch.float64)
    return x, torch.randn((req.batch_size, *out), generator=g, dtype=torch.float64)


def dataset_batch(req: GradcheckRequest, model: Model, dataset: Dataset, settings: Settings,
                  g: torch.Generator) -> tuple[Tensor, Tensor]:
    """batch_size seeded rows of the dataset, read one by one from its tensor file (not the whole file)."""
    _compatible(req, tuple(model.output_shape), dataset.task, dataset.n_outputs)
    rows = torch.randperm(dataset.n_rows, generator=g)[:req.batch_size].tolist()
    with safe_open(str(artifacts.resolve(settings, dataset.path)), framework="pt") as f:
        X, Y = f.get_slice("X"), f.get_slice("y")
        x = torch.cat([X[i:i + 1] for i in rows]).to(torch.float64)
        y = torch.cat([Y[i:i + 1] for i in rows])
    if req.loss.type == "cross_entropy":
        return x, y.to(torch.int64)
    y = y.to(torch.float64)
    return x, y.reshape(-1, 1) if y.dim() == 1 else y


def run(req: GradcheckRequest, input_shape: tuple[int, ...], dataset: Dataset | None,
        settings: Settings) -> dict[str, Any]:
    """The engine's report for the request; Rejection for what is over a limit or cannot be checked."""
    _check_limits(req, input_shape, settings)
    model = Model.from_spec(req.model, input_shape, seed=req.seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(req.seed)
    x, y = dataset_batch(req, model, dataset, settings, g) if dataset is not None else random_batch(req, model, g)
    try:
        report = gradcheck(model, losses.make(req.loss, check_labels=False), x, y, tolerance=req.tolerance,
                           coordinates=req.coordinates, seed=req.seed, time_limit_s=settings.gradcheck_time_limit_s)
    except GradcheckTimeout as e:
        raise Rejection(422, ["body"], f"{e} (gradcheck_time_limit_s)", "limit_exceeded") from None
    except ValueError as e:            # what the network cannot do with this batch (batchnorm of one row)
        raise Rejection(422, ["body", "batch_size"], str(e)) from None
    if not math.isfinite(report["loss"]):
        raise Rejection(422, ["body", "model"], f"the loss is {report['loss']} at the initial weights of seed "
                        f"{req.seed}: gradients are not defined there; check the network and its inputs")
    return report
