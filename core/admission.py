"""Admission of a job: every check of it against its dataset and the service limits that can be
made before anything is queued. Nothing here writes; the caller (POST /v1/jobs, the sweep
scheduler) submits what passes, as the row `new_job` makes.

Each failure is a Rejection carrying the HTTP status, the body location it points at and a
message that says what to change; a shape mismatch is engine.SpecError (its own handler).
"""
from __future__ import annotations

import math
from typing import Any

from engine import Plan, SpecError, check_compatible, format_shape, plan
from engine.memory import estimate
from engine.text import LANGUAGE_MODEL
from engine.train.windows import steps_per_epoch

from .broker import queue_for
from .jobspec import JobRequest, served_spec
from .settings import Settings
from .tables import SEQUENCE_CLASSIFICATION, Dataset, Job, new_id

SQUASHES = {"cross_entropy": "softmax", "bce_with_logits": "sigmoid"}  # what the loss applies itself


class Rejection(Exception):
    def __init__(self, status: int, loc: list[Any], message: str, type_: str = "value_error"):
        super().__init__(message)
        self.status, self.loc, self.message, self.type = status, loc, message, type_


def _check_context(req: JobRequest, dataset: Dataset, settings: Settings) -> None:
    """context_length is a text's, and a text needs one within the limit and within its training tokens."""
    if dataset.task != LANGUAGE_MODEL:
        if req.context_length is not None:
            raise Rejection(422, ["body", "context_length"], f"context_length is for language models; dataset "
                            f"{dataset.id} is a {dataset.kind} dataset (its rows give the input shape)")
        return
    if req.context_length is None:
        raise Rejection(422, ["body", "context_length"], f"dataset {dataset.id} is a text (language_model): set "
                        "context_length, the tokens of each training window (e.g. 64)", "missing")
    if req.context_length > settings.max_context_length:
        raise Rejection(422, ["body", "context_length"], f"context_length {req.context_length} exceeds the limit "
                        f"of {settings.max_context_length} (max_context_length)", "limit_exceeded")
    n_train = training_rows(dataset.n_rows, req.validation_split)
    n_val = dataset.n_rows - n_train
    if n_train < req.context_length + 1 or 0 < n_val < req.context_length + 1:
        raise Rejection(422, ["body", "context_length"], f"the text has {dataset.n_rows} tokens: {n_train} to "
                        f"train on and {n_val} to validate on at validation_split {req.validation_split}; a window "
                        f"of context_length {req.context_length} needs {req.context_length + 1} in each")


def _check_preprocessing(req: JobRequest, dataset: Dataset) -> None:
    """Standardized inputs are float features (not token ids); a standardized target is a regression's."""
    choice = req.preprocessing.standardize
    loc = ["body", "preprocessing", "standardize"]
    if req.preprocessing.inputs and dataset.kind in (LANGUAGE_MODEL, SEQUENCE_CLASSIFICATION):
        raise Rejection(422, loc, f"standardize {choice!r} scales numeric features, but dataset {dataset.id} is "
                        f"{dataset.kind}: its inputs are token ids; use 'none'")
    if req.preprocessing.targets and dataset.task != "regression":
        valid = "'inputs' or 'none'" if dataset.kind not in (LANGUAGE_MODEL, SEQUENCE_CLASSIFICATION) else "'none'"
        raise Rejection(422, loc, f"standardize {choice!r} scales a regression's targets, but dataset {dataset.id} "
                        f"is {dataset.task}: its targets are labels; use {valid}")


def _graph(req: JobRequest, dataset: Dataset) -> Plan:
    """Shape inference on the dataset's input shape, of the network with its preprocessing layers;
    SpecError names the layer and both shapes."""
    try:
        return plan(served_spec(req), req.input_shape(dataset.input_shape))
    except SpecError:
        raise
    except ValueError as e:
        raise Rejection(422, ["body", "model"], str(e)) from None


def _check_loss(req: JobRequest, dataset: Dataset, graph: Plan) -> None:
    """The loss must fit the targets and the network's output (the engine's rule, the one fit
    applies), and must not squash twice: a loss on logits after a final softmax / sigmoid."""
    last = req.model.layers[-1].type
    squash = SQUASHES.get(req.loss.type)
    try:
        if squash is not None and last in ("softmax", "sigmoid"):
            raise ValueError(f"{req.loss.type} takes logits and applies {squash} itself: remove the final "
                             f"{last} (layers[{len(req.model.layers) - 1}]); predict still returns probabilities")
        if dataset.task == LANGUAGE_MODEL:
            _check_language_model(req, dataset, graph)
            return
        classification = dataset.task == "classification"
        check_compatible(req.loss, dataset.task, dataset.n_outputs if classification else None,
                         tuple(graph.output_shape), n_targets=None if classification else dataset.n_outputs)
    except ValueError as e:
        raise Rejection(422, ["body", "loss"], str(e), "incompatible_loss") from None


def _check_language_model(req: JobRequest, dataset: Dataset, graph: Plan) -> None:
    """Token ids in, one row of logits over the vocabulary per position out, cross-entropy between."""
    vocab = dataset.vocab_size
    if graph.layers[0].kind != "embedding":
        raise ValueError(f"a language model reads token ids: start the model with an embedding "
                         f"(num_embeddings {vocab}, the dataset's vocabulary)")
    if req.loss.type != "cross_entropy":
        raise ValueError(f"a language model predicts each next token: use cross_entropy, not {req.loss.type}")
    if tuple(graph.output_shape) != (req.context_length, vocab):
        raise ValueError(f"the model outputs {format_shape(graph.output_shape)} but a language model on this "
                         f"text needs (N, {req.context_length}, {vocab}): a logit per vocabulary id at every "
                         f"position (end with a linear of out_features {vocab})")
    for layer in graph.layers:
        if layer.kind == "embedding" and layer.spec.num_embeddings < vocab:
            raise ValueError(f"an embedding has num_embeddings {layer.spec.num_embeddings} but the text's ids run "
                             f"to {vocab - 1}: set num_embeddings to {vocab}")


def training_rows(n_rows: int, validation_split: float) -> int:
    """As engine.data.split_indices splits: round(n * split) rows are held out."""
    return n_rows - int(round(n_rows * validation_split))


def _check_limits(req: JobRequest, dataset: Dataset, graph: Plan, settings: Settings) -> None:
    if graph.n_parameters > settings.max_parameters:
        raise Rejection(422, ["body", "model"], f"the model has {graph.n_parameters:,} trainable parameters; "
                        f"the limit is {settings.max_parameters:,}", "limit_exceeded")
    n_train = training_rows(dataset.n_rows, req.validation_split)
    if dataset.task == LANGUAGE_MODEL:   # samples: the windows an epoch draws (about one pass by default)
        n_train = req.batch_size * steps_per_epoch(req, n_train, req.context_length)
    if n_train < 1:
        raise Rejection(422, ["body", "validation_split"],
                        f"validation_split {req.validation_split} leaves no training rows of {dataset.n_rows}")
    compute = req.epochs * n_train
    if compute > settings.max_compute_per_job:
        fix = (f"lower epochs to at most {settings.max_compute_per_job // n_train}"
               if settings.max_compute_per_job >= n_train else "use fewer rows")
        raise Rejection(422, ["body", "epochs"], f"epochs × training rows = {req.epochs} × {n_train} = "
                        f"{compute:,} exceeds the limit of {settings.max_compute_per_job:,} per job: {fix}",
                        "limit_exceeded")


def readable_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _check_memory(req: JobRequest, dataset: Dataset, graph: Plan, settings: Settings) -> None:
    """The training step's estimated memory (engine.memory) against max_job_memory_bytes."""
    item = req.torch_dtype.itemsize
    need = estimate(graph, item, req.optimizer)
    if dataset.task == LANGUAGE_MODEL:     # int64 ids on the device, and the validation windows' ids and targets
        data, batch = 3 * dataset.n_rows * 8, req.batch_size
    else:
        data = 2 * dataset.n_rows * (math.prod(dataset.input_shape) + dataset.n_outputs) * item  # on the device
        batch = min(req.batch_size, training_rows(dataset.n_rows, req.validation_split))
    total, limit = need.training_bytes(batch, data), settings.max_job_memory_bytes
    if total <= limit:
        return
    fits = need.max_batch_size(limit, data)
    fix = f"lower batch_size to at most {fits}" if fits else \
        "use a smaller model or fewer rows: its parameters, optimizer state and data alone do not fit"
    raise Rejection(422, ["body", "batch_size"] if fits else ["body", "model"],
                    f"a training step needs about {readable_bytes(total)}: "
                    f"{readable_bytes(need.activation_bytes)} of activations per sample x batch_size {batch}, "
                    f"plus {readable_bytes(need.parameter_bytes + data)} for parameters, optimizer state and "
                    f"data; the per-job memory limit is {readable_bytes(limit)} "
                    f"(max_job_memory_bytes): {fix}", "limit_exceeded")


def _check_processes(req: JobRequest, settings: Settings) -> None:
    if req.distributed.processes > settings.max_processes:
        raise Rejection(422, ["body", "distributed", "processes"], f"distributed.processes is "
                        f"{req.distributed.processes}; this service runs a job on at most {settings.max_processes} "
                        "processes (max_processes)", "limit_exceeded")


def admit(req: JobRequest, dataset: Dataset, settings: Settings) -> Plan:
    """The job's shape plan if it can run on `dataset` within the limits; raises SpecError or Rejection."""
    _check_processes(req, settings)
    _check_context(req, dataset, settings)
    _check_preprocessing(req, dataset)
    graph = _graph(req, dataset)
    _check_loss(req, dataset, graph)
    _check_limits(req, dataset, graph, settings)
    _check_memory(req, dataset, graph, settings)
    return graph


def new_job(req: JobRequest, dataset: Dataset, graph: Plan, owner_id: str, settings: Settings,
            **columns: Any) -> Job:
    """The row of an admitted job, not yet added to a session; what predict needs is copied from
    the dataset, which may be deleted later."""
    request = req.model_dump(mode="json", include=set(JobRequest.model_fields))   # a subclass's extras have columns
    return Job(id=new_id(), owner_id=owner_id, dataset_id=dataset.id, request=request,
               device=req.device, queue=queue_for(req.device), n_parameters=graph.n_parameters,
               max_attempts=settings.max_attempts, input_shape=list(req.input_shape(dataset.input_shape)),
               task=dataset.task, classes=dataset.classes, tokenizer=dataset.tokenizer, **columns)
