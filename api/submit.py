"""Submit-time checks of a job against its dataset and the service limits: all before anything is queued.

Each failure is a Rejection carrying the HTTP status, the body location it points at and
a message that says what to change.
"""
from __future__ import annotations

from typing import Any

from engine import Plan, SpecError, plan
from engine.train import check_compatible as engine_check_compatible

from chainrule.jobspec import JobRequest
from chainrule.models import Dataset
from chainrule.settings import Settings

FINAL_ACTIVATION = {"cross_entropy": "softmax", "bce_with_logits": "sigmoid"}  # what the loss applies itself


class Rejection(Exception):
    def __init__(self, status: int, loc: list[Any], message: str, type_: str = "value_error"):
        super().__init__(message)
        self.status, self.loc, self.message, self.type = status, loc, message, type_


def plan_model(req: JobRequest, dataset: Dataset) -> Plan:
    """Shape inference on the dataset's input shape; SpecError names the layer and both shapes."""
    try:
        return plan(req.model, tuple(dataset.input_shape))
    except SpecError:
        raise
    except ValueError as e:
        raise Rejection(422, ["body", "model"], str(e)) from None


def check_compatible(loss: Any, task: str, n_outputs: int, output_shape: tuple[int, ...],
                     last_layer: str, n_layers: int) -> None:
    """The dataset's targets, the loss and the network's output must fit; raises ValueError.

    The engine's rule (engine.train.check_compatible, the same one fit applies), plus one the
    engine cannot see: a loss on logits after a final softmax / sigmoid would squash twice.
    """
    squash = FINAL_ACTIVATION.get(loss.type)
    if squash is not None and last_layer in ("softmax", "sigmoid"):
        raise ValueError(f"{loss.type} takes logits and applies {squash} itself: remove the final "
                         f"{last_layer} (layers[{n_layers - 1}]); predict still returns probabilities")
    if task == "classification":
        engine_check_compatible(loss, task, n_outputs, output_shape)
    else:
        engine_check_compatible(loss, task, None, output_shape, n_targets=n_outputs)


def training_rows(n_rows: int, validation_split: float) -> int:
    """As engine.data.split_indices splits: round(n * split) rows are held out."""
    return n_rows - int(round(n_rows * validation_split))


def validate_submission(req: JobRequest, dataset: Dataset, settings: Settings) -> Plan:
    """Everything about one job that can be known before it runs; raises SpecError or Rejection."""
    p = plan_model(req, dataset)
    try:
        check_compatible(req.loss, dataset.task, dataset.n_outputs, tuple(p.output_shape),
                         req.model.layers[-1].type, len(req.model.layers))
    except ValueError as e:
        raise Rejection(422, ["body", "loss"], str(e), "incompatible_loss") from None
    if p.n_parameters > settings.max_parameters:
        raise Rejection(422, ["body", "model"], f"the model has {p.n_parameters:,} trainable parameters; "
                        f"the limit is {settings.max_parameters:,}", "limit_exceeded")
    n_train = training_rows(dataset.n_rows, req.validation_split)
    if n_train < 1:
        raise Rejection(422, ["body", "validation_split"],
                        f"validation_split {req.validation_split} leaves no training rows of {dataset.n_rows}")
    compute = req.epochs * n_train
    if compute > settings.max_compute_per_job:
        raise Rejection(422, ["body", "epochs"], f"epochs × training rows = {req.epochs} × {n_train} = "
                        f"{compute:,} exceeds the limit of {settings.max_compute_per_job:,} per job: "
                        + (f"lower epochs to at most {settings.max_compute_per_job // n_train}"
                           if settings.max_compute_per_job >= n_train else "use fewer rows"), "limit_exceeded")
    return p
