"""A job as one readable PyTorch training script (templates/train_job.py.j2, rendered with jinja2).

The script rebuilds the network as torch.nn modules named as the engine's state_dict (chainrule.twin's
layout), draws the engine's initial weights from the job's seed (script_layers.py), reads the dataset
file the job trained on, makes fit's split, shuffles and batches, and trains with torch.optim, the job's
loss and its schedule in closed form. Where a torch.optim default would differ from the engine
(foreach kernels, a scheduler's recursive rounding) the script says what the engine does instead.
"""
from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from core.jobspec import JobRequest
from core.preprocessing import STANDARDIZE_INPUTS, UNSCALE_TARGETS, model_spec
from engine.planning import INPUT_INDEX, plan
from engine.train.rows import BatchPlan, batchnorm_needs_pairs
from engine.train.windows import LANGUAGE_MODEL
from engine.train.windows import steps_per_epoch as windows_per_epoch

from .script_layers import HELPERS, script_layers

_ENV = Environment(loader=PackageLoader("api.export", "templates"), undefined=StrictUndefined,
                   keep_trailing_newline=True, autoescape=False)
_LOSS_DEFAULTS = {"label_smoothing": 0.0, "ignore_index": -100, "delta": 1.0}
_LOSS_CLASSES = {"cross_entropy": "nn.CrossEntropyLoss", "mse": "nn.MSELoss", "l1": "nn.L1Loss",
                 "huber": "nn.HuberLoss", "bce_with_logits": "nn.BCEWithLogitsLoss"}
_OPTIMIZERS = {"sgd": ("SGD", ("lr", "momentum", "dampening", "nesterov", "weight_decay")),
               "rmsprop": ("RMSprop", ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")),
               "adam": ("Adam", ("lr", "betas", "eps", "weight_decay", "amsgrad")),
               "adamw": ("AdamW", ("lr", "betas", "eps", "weight_decay", "amsgrad"))}


def _identifier(key: str) -> str:
    """A Python variable for a layer's output: its key with dots as underscores ("3" -> "layer_3")."""
    name = key.replace(".", "_")
    return name if name.isidentifier() and not name[0].isdigit() else f"layer_{name}"


def _loss_expression(loss: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in loss.items() if k != "type" and v != _LOSS_DEFAULTS.get(k))
    return f"{_LOSS_CLASSES[loss['type']]}({args})"


def _optimizer_expression(optimizer: dict[str, Any]) -> str:
    name, fields = _OPTIMIZERS[optimizer["type"]]
    args = ", ".join(f"{k}={tuple(optimizer[k]) if k == 'betas' else optimizer[k]!r}" for k in fields)
    return (f"torch.optim.{name}(\n        network.parameters(), {args},\n"
            "        foreach=False,   # the single-tensor update: op for op the engine's (engine/optim/rules.py)"
            "\n    )")


def _schedule(schedule: dict[str, Any], total_steps: int) -> str:
    """lr_at's expression in j, the steps after warmup (engine/schedules.py)."""
    kind = schedule["type"]
    if kind == "constant":
        return "BASE_LR"
    if kind == "step":
        return f"BASE_LR * {schedule['gamma']!r} ** (j // {schedule['step_size']})"
    if kind == "exponential":
        return f"BASE_LR * {schedule['gamma']!r} ** j"
    t_max = schedule.get("t_max") or max(1, total_steps - schedule["warmup_steps"])
    eta_min = schedule["eta_min"]
    return f"{eta_min!r} + (BASE_LR - {eta_min!r}) * (1 + math.cos(math.pi * j / {t_max})) / 2"


def _early_stopping(request: JobRequest) -> dict[str, Any] | None:
    if request.early_stopping is None:
        return None
    return {**request.early_stopping.model_dump(mode="json"),
            "smaller": request.early_stopping.monitor in ("val_loss", "train_loss", "val_mae")}


def _layers(graph, dag: bool) -> list[dict[str, Any]]:
    rows = []
    variables = {}
    for layer, ins in zip(script_layers(graph), graph.inputs):
        variable = _identifier(layer.key) if dag else layer.key
        variables[layer.index] = variable
        attribute = dag and layer.key.isidentifier()
        call = f"self.{layer.key}" if attribute else f"self.get_submodule({json.dumps(layer.key)})"
        arguments = ", ".join("x" if j < 0 else variables[j] for j in ins)
        rows.append({**layer.__dict__, "variable": variable, "attribute": attribute, "call": call,
                     "arguments": arguments})
    width = max(len(r["module"]) for r in rows)
    for r in rows:
        r["pad"] = width - len(r["module"])
    return rows


def _network(graph) -> dict[str, Any]:
    """The template's view of the network: its layers as source, ties, which helpers it needs."""
    dag = graph.spec.is_dag
    layers = _layers(graph, dag)
    key = (lambda i: graph.keys[i]) if dag else (lambda i: int(graph.keys[i]))   # nn.Sequential indexes by int
    return dict(
        dag=dag, layers=layers, input_shape_text=", ".join(str(d) for d in graph.input_shape),
        ties=[(key(i), key(j)) for i in range(len(graph.layers)) if (j := graph.spec.tied_index(i)) is not None],
        ids=any(s.type == "embedding" and INPUT_INDEX in ins for s, ins in zip(graph.spec.layers, graph.inputs)),
        helpers={HELPERS[layer["kind"]] for layer in layers if layer["kind"] in HELPERS},
        dropout=any(s.type == "dropout" or getattr(s, "dropout", 0) for s in graph.spec.layers))


def _data(request: JobRequest, graph, task: str | None, n_rows: int) -> dict[str, Any]:
    """Rows and batches (or a text's windows) as fit makes them; steps_per_epoch sizes cosine's t_max."""
    n_train = n_rows - int(round(n_rows * request.validation_split))
    planned = SimpleNamespace(layer_items=lambda: zip(graph.keys, graph.layers))   # what BatchPlan reads of a Model
    if task == LANGUAGE_MODEL:
        return dict(language_model=True, join_lone_last_row=False, context=request.context_length,
                    steps_per_epoch=windows_per_epoch(request.train_config(), n_train, request.context_length))
    return dict(language_model=False, join_lone_last_row=batchnorm_needs_pairs(planned), context=None,
                steps_per_epoch=len(BatchPlan.of(planned, n_train, request.batch_size).bounds))


def _training(request: JobRequest, dag: bool, n_layers: int, language_model: bool, steps: int) -> dict[str, Any]:
    """Loss, optimizer, schedule, early stopping and preprocessing, as source."""
    loss = _loss_expression(request.loss.model_dump(mode="json"))
    schedule = request.schedule.model_dump(mode="json")
    targets = request.preprocessing.targets
    return dict(
        loss=request.loss.type, loss_expression=f"NextTokenLoss({loss})" if language_model else loss,
        optimizer_expression=_optimizer_expression(request.optimizer.model_dump(mode="json")),
        base_lr=request.optimizer.lr, schedule_name=schedule["type"], warmup_steps=schedule["warmup_steps"],
        warmup_start_factor=repr(schedule["warmup_start_factor"]),
        schedule_expression=_schedule(schedule, request.epochs * steps), early_stopping=_early_stopping(request),
        scale_inputs=(STANDARDIZE_INPUTS if dag else "0") if request.preprocessing.inputs else None,
        scale_targets=targets, unscale_key=(UNSCALE_TARGETS if dag else str(n_layers)) if targets else None)


def render_script(job_id: str, request_json: dict[str, Any], input_shape: list[int], task: str | None,
                  n_rows: int, dataset_url: str) -> str:
    """The script of a job (its stored request), whose dataset has n_rows rows (a text's: tokens) of
    input_shape. ValueError (pydantic's, or the plan's SpecError) for a request that no longer builds."""
    request = JobRequest.model_validate(request_json)
    graph = plan(model_spec(request.model, request.preprocessing, None, served=False),
                 request.input_shape(input_shape))
    network, data = _network(graph), _data(request, graph, task, n_rows)
    training = _training(request, network["dag"], len(graph.layers), data["language_model"], data["steps_per_epoch"])
    return _ENV.get_template("train_job.py.j2").render(
        title=f"chainrule job {job_id} as a plain PyTorch script.", filename=f"job_{job_id}.py",
        dataset_url=dataset_url, request_json=json.dumps(request_json, indent=2),
        seed=request.seed, dtype=request.dtype, epochs=request.epochs, batch_size=request.batch_size,
        validation_split=request.validation_split, shuffle=request.shuffle, grad_clip_norm=request.grad_clip_norm,
        **network, **data, **training)
