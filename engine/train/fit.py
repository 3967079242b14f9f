"""fit: train a Model in place on (X, y), one epoch at a time, as named steps.

    rows    = split_rows(...)      X, y and the task checked, the seeded split, targets for the loss
    best    = _Best(...)           the monitored metric's best epoch; early stopping's patience
    batches = BatchPlan.of(...)    each epoch's batch bounds and the batch whose health is measured
    run     = _start_run(...)      fresh, or resumed from a Checkpoint: position, generators, history
    loop.watch.begin(...)          diagnostics (train/watch.py): the init report at step 0, or the rules
                                   rebuilt from the resumed history
    _EpochLoop(...).epochs()       per epoch: should_stop, train_epoch, epoch_metrics, findings, best,
                                   on_epoch_end, on_findings (DiagnosisStop for a stop_on rule), checkpoint
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .. import health, losses, schedules
from ..checkpoint import Checkpoint
from ..spec import EarlyStopping, TrainConfig
from .callbacks import Callbacks, FitResult, Progress
from .errors import NonFiniteError
from .watch import Watch
from .metrics import Meter, evaluate
from .rows import BatchPlan, Rows, epoch_batches, split_rows
from .windows import LANGUAGE_MODEL, split_stream, window_batches, window_plan
from .step import TrainStep

_SHUFFLE_SEED_MIX = 0x9E3779B97F4A7C15          # the shuffle generator's seed: config.seed mixed
_MODES = {"val_loss": "min", "train_loss": "min", "val_mae": "min", "val_accuracy": "max", "val_r2": "max"}


# ----------------------------------------------------------------------------- the best epoch
def _monitored(early_stopping: EarlyStopping | None, rows: Rows) -> str:
    """The metric the best epoch is judged by; ValueError when this run will not have it."""
    if early_stopping is None:
        return "val_loss" if rows.has_val else "train_loss"
    monitor = early_stopping.monitor
    if monitor.startswith("val_") and not rows.has_val:
        raise ValueError(f"early stopping monitors {monitor} but validation_split is 0, so there is no "
                         "validation set; set validation_split > 0 or monitor train_loss")
    if monitor in ("val_mae", "val_r2") and rows.kind != "regression":
        raise ValueError(f"early stopping monitors {monitor}, a regression metric, but the task is "
                         "classification; monitor val_loss or val_accuracy")
    if monitor == "val_accuracy" and rows.kind == "regression":
        raise ValueError("early stopping monitors val_accuracy but the task is regression; "
                         "monitor val_loss, val_mae or val_r2")
    return monitor


class _Best:
    """The best epoch of the monitored metric, early stopping's patience count, the best weights."""

    def __init__(self, monitor: str, early_stopping: EarlyStopping | None):
        self.monitor, self.early_stopping = monitor, early_stopping
        self.min_delta = early_stopping.min_delta if early_stopping is not None else 0.0
        self.value: float | None = None
        self.epoch: int | None = None
        self.wait = 0                                     # epochs since the best one
        self.weights: dict[str, Tensor] | None = None     # kept only for early_stopping.restore_best

    def as_dict(self) -> dict[str, Any]:
        return {"best_value": self.value, "best_epoch": self.epoch, "wait": self.wait}

    def resume(self, saved: dict[str, Any], weights: dict[str, Tensor] | None, device) -> None:
        self.value = saved.get("best_value", self.value)
        self.epoch = saved.get("best_epoch", self.epoch)
        self.wait = saved.get("wait", self.wait)
        if weights is not None:
            self.weights = {k: v.to(device) for k, v in weights.items()}

    def update(self, metrics: dict[str, Any], model) -> bool:
        """Judge an epoch's metrics; True when early stopping ends the run."""
        value, best = metrics[self.monitor], self.value
        smaller = _MODES[self.monitor] == "min"
        improved = not math.isnan(value) and (   # a NaN metric never counts as the best
            best is None or (value < best - self.min_delta if smaller else value > best + self.min_delta))
        if improved:
            self.value, self.epoch, self.wait = value, metrics["epoch"], 0
            if self.early_stopping is not None and self.early_stopping.restore_best:
                self.weights = model.state_dict()
            return False
        self.wait += 1
        return self.early_stopping is not None and self.wait >= self.early_stopping.patience

    def restore(self, model, last_epoch: int | None) -> None:
        """Finish with the best weights, when early stopping keeps them and they are not the last's."""
        keeps = self.early_stopping is not None and self.early_stopping.restore_best
        if keeps and self.weights is not None and self.epoch != last_epoch:
            model.load_state_dict(self.weights, strict=True)


# ----------------------------------------------------------------------------- the run
@dataclass
class _Run:
    """Where a run is: what a Checkpoint holds besides the model and the optimizer."""
    config: TrainConfig
    base_lr: float                  # the lr the schedule scales
    best: _Best
    shuffle_gen: torch.Generator
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0                  # epochs completed
    step: int = 0                   # optimizer steps taken
    init_report: dict[str, Any] | None = None   # engine.diagnostics' report at step 0

    def checkpoint(self, model, optimizer, status: str) -> Checkpoint:
        weights = self.best.weights
        return Checkpoint(
            epoch=self.epoch, step=self.step, model_state=model.state_dict(),
            optimizer_state=optimizer.state_dict(),
            rng={"shuffle": self.shuffle_gen.get_state().clone(), "dropout": model.generator.get_state().clone()},
            early_stopping=self.best.as_dict(),
            best_state=None if weights is None else {k: v.clone() for k, v in weights.items()},
            history=[dict(h) for h in self.history], config=self.config.model_dump(mode="json"),
            base_lr=self.base_lr, status=status, init_report=self.init_report)


def _start_run(model, optimizer, config: TrainConfig, best: _Best, resume: Checkpoint | None) -> _Run:
    """A fresh run, or the run `resume` was saved from: weights, optimizer, generators, history."""
    shuffle_gen = torch.Generator().manual_seed((config.seed ^ _SHUFFLE_SEED_MIX) % 2**64)
    run = _Run(config, float(optimizer.lr), best, shuffle_gen)
    if resume is None:
        return run
    for name in ("seed", "validation_split"):
        was = resume.config.get(name, getattr(config, name))
        if was != getattr(config, name):
            raise ValueError(f"cannot resume: the checkpoint was trained with {name}={was!r}, "
                             f"this run has {name}={getattr(config, name)!r}")
    model.load_state_dict(resume.model_state, strict=True)
    optimizer.load_state_dict(resume.optimizer_state)
    if resume.base_lr is not None:
        run.base_lr = float(resume.base_lr)
    if "shuffle" in resume.rng:
        shuffle_gen.set_state(resume.rng["shuffle"].cpu())
    if "dropout" in resume.rng:
        model.generator.set_state(resume.rng["dropout"].cpu())
    best.resume(resume.early_stopping, resume.best_state, model.device)
    run.history, run.epoch, run.step = [dict(h) for h in resume.history], resume.epoch, resume.step
    run.init_report = resume.init_report
    return run


def _overrides(callbacks: Callbacks, name: str) -> bool:
    return getattr(type(callbacks), name, None) is not getattr(Callbacks, name)


class _EpochLoop:
    """What stays fixed through one fit call, and the steps of an epoch."""

    def __init__(self, model, loss, optimizer, rows: Rows, batches: BatchPlan, run: _Run,
                 callbacks: Callbacks, task: str, parallel=None):
        self.model, self.loss, self.optimizer, self.rows, self.batches, self.run = \
            model, loss, optimizer, rows, batches, run
        self.callbacks, self.task, self.config, self.parallel = callbacks, task, run.config, parallel
        self.watch = Watch(self.config.diagnostics, callbacks)
        self.total_steps = self.config.epochs * len(batches.bounds)
        self.schedule = schedules.make(self.config.schedule, run.base_lr, self.total_steps)
        clip = self.config.grad_clip_norm
        self.train_step = TrainStep(model, loss, optimizer, clip) if parallel is None else \
            parallel.step(model, loss, optimizer, clip)
        self.spans = health.param_spans(model)

    def epochs(self, checkpoint_every: int) -> str:
        """Train the epochs left; return the run's status."""
        callbacks, run = self.callbacks, self.run
        report = _overrides(callbacks, "on_checkpoint")
        for epoch in range(run.epoch + 1, self.config.epochs + 1):
            started = time.perf_counter()
            if self.should_stop():         # before the epoch's shuffle draw: a boundary checkpoint is exact
                if report:
                    callbacks.on_checkpoint(run.checkpoint(self.model, self.optimizer, "cancelled"))
                return "cancelled"
            trained = self.train_epoch(epoch)
            if trained is None:            # cancelled mid-epoch: no checkpoint, its weights resume inexactly
                return "cancelled"
            metrics = self.epoch_metrics(epoch, *trained, started)
            if self.parallel is not None:  # rank 0's numbers on every rank: the same decisions below
                metrics = self.parallel.agree(metrics)
            findings = self.watch.judge(metrics)
            run.history.append(metrics)
            run.epoch = epoch
            stop = run.best.update(metrics, self.model)
            callbacks.on_epoch_end(metrics)
            self.watch.report(findings)    # DiagnosisStop: a rule in diagnostics.stop_on ends the run
            ending = stop or epoch == self.config.epochs
            if report and (ending or (checkpoint_every and epoch % checkpoint_every == 0)):
                status = ("early_stopped" if stop else "completed") if ending else "running"
                callbacks.on_checkpoint(run.checkpoint(self.model, self.optimizer, status))
            if stop:
                return "early_stopped"
        return "completed"

    def should_stop(self) -> bool:
        """The callbacks' answer; in data parallelism, True on every rank when any rank's is."""
        stop = self.callbacks.should_stop()
        return stop if self.parallel is None else self.parallel.any(stop)

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], dict[str, Any]] | None:
        """An epoch's steps: (train metrics, layer health), or None if should_stop ends it midway."""
        run, rows, parallel = self.run, self.rows, self.parallel
        if parallel is not None:
            parallel.begin_epoch(epoch)
        meter = Meter(rows.kind, rows.y_train.shape[1] if rows.y_train.dim() == 2 else 1,
                      rows.X_train.device, rows.ss_train)
        layers: dict[str, Any] = {}
        report = _overrides(self.callbacks, "on_step")
        for b, (xb, yb) in enumerate(self.batches_of_epoch()):
            if b and self.should_stop():             # before every step; batch 0's is epochs()'s
                return None
            if parallel is not None:                 # this rank's rows of the global batch
                xb, yb = parallel.shard(xb, yb)
            self.optimizer.lr = self.schedule.lr_at(run.step)
            try:
                if b == self.batches.health_batch:
                    layers = self.measured_step(xb, yb)
                else:
                    self.train_step(xb, yb)
            except NonFiniteError as e:
                located = e.located(run.step + 1, epoch)
                self.watch.non_finite(located)
                raise located from None
            run.step += 1
            meter.add(self.train_step.output, yb, self.train_step.value)
            self.train_step.output = None            # counted: no activation is kept between steps
            if report:
                self.callbacks.on_step(Progress(epoch, self.config.epochs, run.step, self.total_steps,
                                                run.step / max(self.total_steps, 1)))
        if parallel is not None:
            parallel.reduce_meter(meter)
            parallel.sync_buffers()                  # rank 0's running statistics: evaluated, checkpointed
        return meter.result("train"), layers

    def batches_of_epoch(self):
        """(xb, yb) of each step: a language model's random windows, or the rows (shuffled or not)."""
        if self.rows.kind == LANGUAGE_MODEL:   # windows are always drawn: the seeded shuffle generator
            return window_batches(self.rows, self.batches, self.model.input_shape[0], self.run.shuffle_gen)
        return epoch_batches(self.rows, self.batches.bounds, self.run.shuffle_gen if self.config.shuffle else None)

    def measured_step(self, xb: Tensor, yb: Tensor) -> dict[str, Any]:
        """A training step whose health is measured (engine.health): outputs observed in the forward,
        gradients and weights copied before the update."""
        outputs = self.watch.observer()
        self.train_step.forward_backward(xb, yb, observe=outputs)
        grads, params = self.model.flat_grads.clone(), self.model.flat_params.clone()
        self.train_step.apply()
        return health.layer_health(self.model, grads, params, outputs, self.spans)

    def epoch_metrics(self, epoch: int, train: dict[str, float], layers: dict[str, Any],
                      started: float) -> dict[str, Any]:
        metrics: dict[str, Any] = {"epoch": epoch, **train}
        if self.rows.has_val:
            metrics.update(evaluate(self.model, self.loss, self.rows.X_val, self.rows.y_val, task=self.task,
                                    batch_size=self.config.batch_size, ss_tot=self.rows.ss_val))
        metrics.update({"lr": self.optimizer.lr, "epoch_time_s": time.perf_counter() - started,
                        "steps": self.run.step, "layers": layers})
        return metrics


def fit(model, loss, optimizer, X: Tensor, y: Tensor | None, config: TrainConfig | dict, *,
        task: str, callbacks: Callbacks | None = None, resume: Checkpoint | None = None,
        checkpoint_every: int = 1, parallel=None) -> FitResult:
    """Train `model` in place on (X, y); see the package docstring.

    X: (N, *model.input_shape); y: (N,) integer labels (classification) or (N,) / (N, k) floats
    (regression). task="language_model": X is a 1-D token stream and y is ignored (None); see
    train/windows.py. Raises ValueError for data / config that cannot work (before any step),
    NonFiniteError when the loss becomes NaN / inf, and DiagnosisStop when a rule named in
    config.diagnostics.stop_on finds something. checkpoint_every: epochs between
    on_checkpoint calls (0: only when the run ends). `loss` is read for its spec: fit trains with
    losses.make(loss.spec, check_labels=False), as the labels are checked once, up front, here.
    parallel: a train.distributed.DataParallel: this process is one rank of a data-parallel run on
    the global batch_size (every rank calls fit alike; only rank 0's callbacks should write).
    """
    started = time.perf_counter()
    config = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(config)
    callbacks = callbacks if callbacks is not None else Callbacks()
    if task == LANGUAGE_MODEL:                 # X: the token stream; y unused (the stream shifted by one)
        rows = split_stream(model, X, config)
        batches = window_plan(config, rows.X_train.shape[0], model.input_shape[0])
    else:
        rows = split_rows(model, loss.name, X, y, config, task)
        batches = BatchPlan.of(model, rows.X_train.shape[0], config.batch_size)
    best = _Best(_monitored(config.early_stopping, rows), config.early_stopping)
    run = _start_run(model, optimizer, config, best, resume)
    if parallel is not None:                   # rank 0's parameters, fresh or resumed
        parallel.attach(model, config.seed)
        batches = parallel.plan(batches)
    unchecked = losses.make(loss.spec, check_labels=False)   # no per-batch host sync to check labels
    loop = _EpochLoop(model, unchecked, optimizer, rows, batches, run, callbacks, task, parallel)
    loop.watch.begin(model, unchecked, rows, config.batch_size, run)
    status = loop.epochs(checkpoint_every)
    best.restore(model, run.history[-1]["epoch"] if run.history else None)
    return FitResult(status=status, epochs_completed=len(run.history), steps=run.step, history=run.history,
                     best_epoch=best.epoch, best_value=best.value, total_time_s=time.perf_counter() - started)
