"""The training loop: `fit` trains a Model with a hand-written loss and optimizer.

The Celery worker stays thin: it builds the model, loss and optimizer, calls `fit` with
a Callbacks subclass (progress, cancellation, checkpoints) and stores what comes back.

    step = TrainStep(model, loss, optimizer, grad_clip_norm)   # the per-step math, reused by
    value = step(xb, yb)                                       # the benchmark as is

Determinism: the validation split comes from torch.Generator seeded with config.seed;
batches from a separate CPU generator seeded from config.seed; dropout masks from
model.generator. A Checkpoint holds both generators' states, the optimizer state and the
global step, so a run stopped after epoch k and resumed from its checkpoint ends
bit-identical to the run that never stopped (on the same device).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from . import health as _health
from .checkpoint import Checkpoint
from .data import check_compatible, check_finite, prepare_targets, split_indices
from .optim import clip_grad_norm_
from .shapes import format_shape
from .spec import TrainConfig

_SHUFFLE_SEED_MIX = 0x9E3779B97F4A7C15          # the shuffle generator's seed: config.seed mixed
_GATHER_LIMIT_BYTES = 512 * 2**20              # gather a whole shuffled epoch at once below this
_MODES = {"val_loss": "min", "train_loss": "min", "val_mae": "min", "val_accuracy": "max", "val_r2": "max"}

__all__ = ["fit", "TrainStep", "Callbacks", "Progress", "FitResult", "TrainingError", "NonFiniteError",
           "check_compatible", "evaluate"]


# ----------------------------------------------------------------------------- errors
class TrainingError(Exception):
    """A run that cannot go on; `code` is a stable machine-readable reason."""
    code = "training_error"


class NonFiniteError(TrainingError):
    """The loss became NaN / inf. Names the step, the epoch and the layer it points at."""
    code = "non_finite"

    def __init__(self, message: str, *, value: float, step: int | None = None, epoch: int | None = None,
                 layer_key: str | None = None, layer_kind: str | None = None, found_in: str | None = None):
        super().__init__(message)
        self.value, self.step, self.epoch = value, step, epoch
        self.layer_key, self.layer_kind, self.found_in = layer_key, layer_kind, found_in

    @classmethod
    def describe(cls, value: float, step: int | None, epoch: int | None, key: str | None,
                 kind: str | None, found_in: str | None) -> "NonFiniteError":
        where = "" if step is None else f" at step {step}" + ("" if epoch is None else f" (epoch {epoch})")
        label = None if key is None else (f"layer {key}" if key.isdigit() else f"layer {key!r}") + f" ({kind})"
        if found_in == "gradient":
            cause = f"first non-finite gradient in {label}"
        elif found_in == "weights":
            cause = f"no non-finite gradient; first non-finite weights in {label}"
        else:
            cause = "no layer has non-finite gradients or weights (check the data and the loss)"
        return cls(f"loss became {value}{where}; {cause}", value=value, step=step, epoch=epoch,
                   layer_key=key, layer_kind=kind, found_in=found_in)

    def located(self, step: int, epoch: int) -> "NonFiniteError":
        return self.describe(self.value, step, epoch, self.layer_key, self.layer_kind, self.found_in)


def find_nonfinite_layer(model) -> tuple[str | None, str | None, str | None]:
    """(key, type, "gradient" | "weights" | None): the first layer, in backward order (output to
    input), whose gradients are not all finite; else the first layer, input to output, with
    non-finite weights; else (None, None, None)."""
    items = list(model.layer_items())
    for key, layer in reversed(items):
        if any(not bool(torch.isfinite(g).all()) for g in layer.grads.values()):
            return key, layer.spec.type, "gradient"
    for key, layer in items:
        if any(not bool(torch.isfinite(p).all()) for p in layer.params.values()):
            return key, layer.spec.type, "weights"
    return None, None, None


# ----------------------------------------------------------------------------- one step
class TrainStep:
    """One optimizer step: forward (training mode), loss, backward, non-finite check,
    optional global-norm clipping, update. `fit` runs exactly this; so does the benchmark.

    The caller sets `optimizer.lr` before each call. After a call, `output` is the batch's
    model output and `value` the loss as a float. Split in two (`forward_backward`, then
    `apply`) so `fit` can look at the gradients between them once per epoch.
    """

    def __init__(self, model, loss, optimizer, grad_clip_norm: float | None = None):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        self.flat_grads: Tensor = model.flat_grads
        self.output: Tensor | None = None
        self.value: float = math.nan
        # Each public entry runs under torch.inference_mode: the engine has no autograd, and
        # skipping autograd's dispatch bookkeeping takes ~10% off a small model's step. One
        # context object, reused (entered one at a time): making one costs ~2 us a step.
        self._no_autograd = torch.inference_mode()

    def forward_backward(self, xb: Tensor, yb: Tensor, observe=None) -> Tensor:
        """Loss and gradients of a batch; raises NonFiniteError (no step/epoch) on a NaN/inf loss.
        observe: passed to Model.forward (see there)."""
        with self._no_autograd:
            return self._forward_backward(xb, yb, observe)

    def apply(self) -> None:
        """Clip (if configured) and update with the gradients of the last forward_backward."""
        with self._no_autograd:
            self._apply()

    def __call__(self, xb: Tensor, yb: Tensor) -> Tensor:
        with self._no_autograd:                  # entered once for both halves
            loss = self._forward_backward(xb, yb)
            self._apply()
        return loss

    def _forward_backward(self, xb: Tensor, yb: Tensor, observe=None) -> Tensor:
        out = self.model.forward(xb, True, observe=observe)
        loss = self.loss.forward(out, yb)
        self.model.backward(self.loss.backward(), need_input_grad=False)   # training needs no dL/dinput
        value = loss.item()                      # the one host sync per step: the finiteness check
        self.output, self.value = out, value
        if not math.isfinite(value):
            key, kind, found_in = find_nonfinite_layer(self.model)
            raise NonFiniteError.describe(value, None, None, key, kind, found_in)
        return loss

    def _apply(self) -> None:
        if self.grad_clip_norm is not None:
            clip_grad_norm_(self.flat_grads, self.grad_clip_norm)
        self.optimizer.step(self.flat_grads)


# ----------------------------------------------------------------------------- callbacks
@dataclass
class Progress:
    epoch: int          # current epoch, 1-based
    epochs: int         # epochs in the run
    step: int           # optimizer steps done (global)
    total_steps: int
    fraction: float     # step / total_steps


class Callbacks:
    """Hooks the worker overrides; every method is a no-op here.

    on_step runs after every optimizer step and should_stop before every step: both must be
    cheap (throttle inside). on_checkpoint runs every `checkpoint_every` epochs, when the run
    ends at an epoch end, and once more when it is cancelled at an epoch boundary
    (a cancel mid-epoch leaves the last epoch's checkpoint as the resume point).
    """

    def on_step(self, progress: Progress) -> None:
        pass

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        pass


def _overrides(cb: Callbacks, name: str) -> bool:
    return getattr(type(cb), name, None) is not getattr(Callbacks, name)


@dataclass
class FitResult:
    status: str                      # "completed" | "early_stopped" | "cancelled"
    epochs_completed: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    total_time_s: float = 0.0


# ----------------------------------------------------------------------------- metrics
class _Meter:
    """Per-epoch accumulation of the training metrics, on the device (no per-step sync)."""

    def __init__(self, kind: str, width: int, device, ss_tot: Tensor | None):
        self.kind, self.ss_tot = kind, ss_tot
        self.loss_sum, self.n = 0.0, 0
        f64 = dict(dtype=torch.float64, device=device)
        if kind == "regression":
            self.abs_sum, self.sq_sum = torch.zeros(width, **f64), torch.zeros(width, **f64)
        else:
            self.correct = torch.zeros((), dtype=torch.int64, device=device)

    def add(self, out: Tensor, yb: Tensor, value: float) -> None:
        n = out.shape[0]
        self.loss_sum += value * n
        self.n += n
        if self.kind == "cross_entropy":
            self.correct += (out.argmax(dim=1) == yb).sum()
        elif self.kind == "bce_with_logits":
            self.correct += ((out > 0) == (yb > 0.5)).sum()
        else:
            d = (out - yb).to(torch.float64)
            self.abs_sum += d.abs().sum(dim=0)
            self.sq_sum += (d * d).sum(dim=0)

    def result(self, prefix: str) -> dict[str, float]:
        n = max(self.n, 1)
        out = {f"{prefix}_loss": self.loss_sum / n}
        if self.kind == "regression":
            out[f"{prefix}_mae"] = float(self.abs_sum.sum()) / (n * self.abs_sum.numel())
            out[f"{prefix}_r2"] = _r2(self.sq_sum, self.ss_tot)
        else:
            out[f"{prefix}_accuracy"] = int(self.correct) / n
        return out


def _ss_tot(y: Tensor) -> Tensor:
    y = y.to(torch.float64)
    return ((y - y.mean(dim=0)) ** 2).sum(dim=0)


def _r2(ss_res: Tensor, ss_tot: Tensor) -> float:
    """Mean over outputs of 1 - SS_res / SS_tot (sklearn's r2_score, uniform average)."""
    vals = []
    for res, tot in zip(ss_res.tolist(), ss_tot.tolist()):
        vals.append(1.0 - res / tot if tot > 0 else (1.0 if res == 0 else 0.0))
    return sum(vals) / len(vals)


def _metric_kind(loss_name: str, task: str) -> str:
    return loss_name if task == "classification" else "regression"


@torch.no_grad()
def evaluate(model, loss, X: Tensor, y: Tensor, *, task: str, batch_size: int,
             prefix: str = "val", ss_tot: Tensor | None = None) -> dict[str, float]:
    """Eval-mode (training=False) loss and metrics of prepared data, in batches."""
    kind = _metric_kind(loss.name, task)
    width = y.shape[1] if y.dim() == 2 else 1
    meter = _Meter(kind, width, X.device, _ss_tot(y) if ss_tot is None and kind == "regression" else ss_tot)
    loss_sum = torch.zeros((), dtype=torch.float64, device=X.device)
    for i in range(0, X.shape[0], batch_size):
        xb, yb = X[i:i + batch_size], y[i:i + batch_size]
        out = model.forward(xb, False)
        loss_sum += loss.forward(out, yb).to(torch.float64) * xb.shape[0]
        meter.add(out, yb, 0.0)
    result = meter.result(prefix)
    result[f"{prefix}_loss"] = float(loss_sum) / max(X.shape[0], 1)
    return result


# ----------------------------------------------------------------------------- fit
def _gen_state(g: torch.Generator) -> Tensor:
    return g.get_state().clone()


def _needs_two_samples(model) -> bool:
    """True when a batchnorm would see 1 value per channel in a batch of one sample."""
    for _, layer in model.layer_items():
        if layer.spec.type == "batchnorm" and math.prod(layer.in_shapes[0][1:]) == 1:
            return True
    return False


def _batch_bounds(n: int, batch_size: int, no_single: bool) -> list[tuple[int, int]]:
    """(start, end) of each batch of an epoch; the last partial batch is kept. When `no_single`
    and it would hold a single sample (batchnorm cannot train on that), it joins the batch before."""
    bounds = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    if no_single and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _validate_monitor(es, has_val: bool, kind: str) -> None:
    if es is None:
        return
    m = es.monitor
    if m.startswith("val_") and not has_val:
        raise ValueError(f"early stopping monitors {m} but validation_split is 0, so there is no "
                         "validation set; set validation_split > 0 or monitor train_loss")
    if m in ("val_mae", "val_r2") and kind != "regression":
        raise ValueError(f"early stopping monitors {m}, a regression metric, but the task is classification; "
                         "monitor val_loss or val_accuracy")
    if m == "val_accuracy" and kind == "regression":
        raise ValueError("early stopping monitors val_accuracy but the task is regression; "
                         "monitor val_loss, val_mae or val_r2")


def fit(model, loss, optimizer, X: Tensor, y: Tensor, config: TrainConfig | dict, *,
        task: str, callbacks: Callbacks | None = None, resume: Checkpoint | None = None,
        checkpoint_every: int = 1) -> FitResult:
    """Train `model` in place on (X, y); see the module docstring.

    X: (N, *model.input_shape); y: (N,) integer labels (classification) or (N,) / (N, k) floats
    (regression). Raises ValueError for data / config that cannot work (before any step) and
    NonFiniteError when the loss becomes NaN / inf. checkpoint_every: epochs between
    on_checkpoint calls (0: only when the run ends).
    """
    t_start = time.perf_counter()
    config = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(config)
    cb = callbacks if callbacks is not None else Callbacks()
    want_step, want_ckpt = _overrides(cb, "on_step"), _overrides(cb, "on_checkpoint")
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    dev, dtype = model.device, model.dtype
    loss_name = loss.name
    kind = _metric_kind(loss_name, task)

    # ---- data: once onto the device, split, targets shaped for the loss
    if X.dim() < 1 or tuple(X.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"X has shape {format_shape(X.shape, batch=False)}, the model expects "
                         f"{format_shape(model.input_shape)}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    check_finite(X, "X")
    if task == "regression":
        check_finite(y, "y")
    X = X.to(device=dev, dtype=dtype)
    y = prepare_targets(loss_name, task, y, model.output_shape, dtype=dtype, device=dev)
    n = X.shape[0]
    train_idx, val_idx = split_indices(n, config.validation_split, config.seed)
    n_train, n_val = train_idx.numel(), val_idx.numel()
    if n_train == 0:
        raise ValueError(f"validation_split {config.validation_split} leaves no training rows of {n}")
    train_idx, val_idx = train_idx.to(dev), val_idx.to(dev)
    X_train, y_train = X.index_select(0, train_idx), y.index_select(0, train_idx)
    X_val, y_val = X.index_select(0, val_idx), y.index_select(0, val_idx)
    del X, y
    has_val = n_val > 0
    es = config.early_stopping
    _validate_monitor(es, has_val, kind)
    monitor = es.monitor if es is not None else ("val_loss" if has_val else "train_loss")
    mode = _MODES[monitor]
    width = y_train.shape[1] if y_train.dim() == 2 else 1
    ss_tot_train = _ss_tot(y_train) if kind == "regression" else None
    ss_tot_val = _ss_tot(y_val) if kind == "regression" and has_val else None

    # ---- schedule, generators, state (fresh or resumed)
    bs = config.batch_size
    two = _needs_two_samples(model)
    if two and min(bs, n_train) < 2:
        raise ValueError(f"batchnorm on features needs at least 2 samples per batch; batch_size is {bs} "
                         f"and there are {n_train} training rows")
    bounds = _batch_bounds(n_train, bs, two)
    steps_per_epoch = len(bounds)
    total_steps = config.epochs * steps_per_epoch
    full = [b for b, (lo, hi) in enumerate(bounds) if hi - lo >= bs]
    health_batch = full[-1] if full else 0               # the last full-size batch of an epoch
    shuffle_gen = torch.Generator().manual_seed((config.seed ^ _SHUFFLE_SEED_MIX) % 2**64)
    base_lr = float(optimizer.lr)
    history: list[dict[str, Any]] = []
    best = {"best_value": None, "best_epoch": None, "wait": 0}
    best_state: dict[str, Tensor] | None = None
    start_epoch, step = 1, 0
    if resume is not None:
        for name in ("seed", "validation_split"):
            was = resume.config.get(name, getattr(config, name))
            if was != getattr(config, name):
                raise ValueError(f"cannot resume: the checkpoint was trained with {name}={was!r}, "
                                 f"this run has {name}={getattr(config, name)!r}")
        model.load_state_dict(resume.model_state, strict=True)
        optimizer.load_state_dict(resume.optimizer_state)
        base_lr = float(resume.base_lr) if resume.base_lr is not None else base_lr
        if "shuffle" in resume.rng:
            shuffle_gen.set_state(resume.rng["shuffle"].cpu())
        if "dropout" in resume.rng:
            model.generator.set_state(resume.rng["dropout"].cpu())
        best.update({k: resume.early_stopping[k] for k in best if k in resume.early_stopping})
        if resume.best_state is not None:
            best_state = {k: v.to(dev) for k, v in resume.best_state.items()}
        history = [dict(h) for h in resume.history]
        start_epoch, step = resume.epoch + 1, resume.step
    from . import schedules
    schedule = schedules.make(config.schedule, base_lr, total_steps)
    train_step = TrainStep(model, loss, optimizer, config.grad_clip_norm)
    spans = _health.param_spans(model)
    gather_epoch = X_train.numel() * X_train.element_size() <= _GATHER_LIMIT_BYTES
    label_check = getattr(loss, "check_labels", None)
    if label_check is not None:
        loss.check_labels = False            # labels were checked once above; skip the per-batch sync

    def checkpoint(epoch: int, status: str) -> Checkpoint:
        return Checkpoint(
            epoch=epoch, step=step, model_state=model.state_dict(), optimizer_state=optimizer.state_dict(),
            rng={"shuffle": _gen_state(shuffle_gen), "dropout": _gen_state(model.generator)},
            early_stopping=dict(best),
            best_state=None if best_state is None else {k: v.clone() for k, v in best_state.items()},
            history=[dict(h) for h in history], config=config.model_dump(mode="json"),
            base_lr=base_lr, status=status)

    status, mid_epoch = "completed", False
    epoch = start_epoch - 1
    last_lr = optimizer.lr
    try:
        with torch.no_grad():
            for epoch in range(start_epoch, config.epochs + 1):
                t_epoch = time.perf_counter()
                if cb.should_stop():       # before the epoch's shuffle draw: a boundary checkpoint is exact
                    status = "cancelled"
                    break
                if config.shuffle:
                    order = torch.randperm(n_train, generator=shuffle_gen).to(dev)
                    Xe, ye = ((X_train.index_select(0, order), y_train.index_select(0, order))
                              if gather_epoch else (X_train, y_train))
                else:
                    order, Xe, ye = None, X_train, y_train
                meter = _Meter(kind, width, dev, ss_tot_train)
                layers_health: dict[str, Any] = {}
                for b, (lo, hi) in enumerate(bounds):
                    if b and cb.should_stop():     # once before every step (batch 0's is above)
                        status, mid_epoch = "cancelled", True
                        break
                    if gather_epoch or order is None:
                        xb, yb = Xe[lo:hi], ye[lo:hi]
                    else:
                        idx = order[lo:hi]
                        xb, yb = X_train.index_select(0, idx), y_train.index_select(0, idx)
                    last_lr = optimizer.lr = schedule.lr_at(step)
                    try:
                        if b == health_batch:
                            outputs = _health.OutputStats()
                            train_step.forward_backward(xb, yb, observe=outputs)
                            g0, w0 = model.flat_grads.clone(), model.flat_params.clone()
                            train_step.apply()
                            layers_health = _health.layer_health(model, g0, w0, outputs, spans)
                            del g0, w0
                        else:
                            train_step(xb, yb)
                    except NonFiniteError as e:
                        raise e.located(step + 1, epoch) from None
                    step += 1
                    meter.add(train_step.output, yb, train_step.value)
                    if want_step:
                        cb.on_step(Progress(epoch, config.epochs, step, total_steps, step / max(total_steps, 1)))
                if status == "cancelled":
                    break
                train_step.output = None
                metrics: dict[str, Any] = {"epoch": epoch}
                metrics.update(meter.result("train"))
                if has_val:
                    metrics.update(evaluate(model, loss, X_val, y_val, task=task, batch_size=bs,
                                            ss_tot=ss_tot_val))
                metrics.update({"lr": last_lr, "epoch_time_s": time.perf_counter() - t_epoch,
                                "steps": step, "layers": layers_health})
                history.append(metrics)

                # early stopping / best tracking
                value = metrics[monitor]
                prev = best["best_value"]
                min_delta = es.min_delta if es is not None else 0.0
                improved = not math.isnan(value) and (  # a NaN val metric never counts as the best
                    prev is None or (value < prev - min_delta if mode == "min" else value > prev + min_delta))
                if improved:
                    best.update(best_value=value, best_epoch=epoch, wait=0)
                    if es is not None and es.restore_best:
                        best_state = model.state_dict()
                else:
                    best["wait"] += 1
                    if es is not None and best["wait"] >= es.patience:
                        status = "early_stopped"
                cb.on_epoch_end(metrics)
                ending = status == "early_stopped" or epoch == config.epochs
                if want_ckpt and (ending or (checkpoint_every and epoch % checkpoint_every == 0)):
                    cb.on_checkpoint(checkpoint(epoch, status if ending else "running"))
                if status == "early_stopped":
                    break
    finally:
        if label_check is not None:
            loss.check_labels = label_check
    epochs_completed = len(history)
    if status == "cancelled" and want_ckpt and not mid_epoch:  # mid-epoch weights resume inexactly
        cb.on_checkpoint(checkpoint(epochs_completed, "cancelled"))
    if es is not None and es.restore_best and best_state is not None \
            and best["best_epoch"] != (history[-1]["epoch"] if history else None):
        model.load_state_dict(best_state, strict=True)
    return FitResult(status=status, epochs_completed=epochs_completed, steps=step, history=history,
                     best_epoch=best["best_epoch"], best_value=best["best_value"],
                     total_time_s=time.perf_counter() - t_start)
