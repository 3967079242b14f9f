"""Loss, optimizer, schedule and training specs, with torch.nn / torch.optim's names and defaults."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from .base import Real, Spec, type_from_str
from .diagnostics import Diagnostics


# ----------------------------------------------------------------------------- losses
class CrossEntropyLoss(Spec):
    """Softmax cross-entropy on logits with integer class labels (torch.nn.CrossEntropyLoss)."""
    type: Literal["cross_entropy"]
    label_smoothing: Real = Field(0.0, ge=0, le=1)
    ignore_index: int = Field(-100, description="Targets equal to it add nothing to the loss or its gradient, "
                                                "and the mean runs over the others (torch's default -100).")


class MSELoss(Spec):
    type: Literal["mse"]


class L1Loss(Spec):
    type: Literal["l1"]


class HuberLoss(Spec):
    type: Literal["huber"]
    delta: Real = Field(1.0, gt=0)


class BCEWithLogitsLoss(Spec):
    """Binary cross-entropy on logits, targets in [0, 1] (torch.nn.BCEWithLogitsLoss)."""
    type: Literal["bce_with_logits"]


LossSpec = Annotated[
    Union[CrossEntropyLoss, MSELoss, L1Loss, HuberLoss, BCEWithLogitsLoss],
    Field(discriminator="type"),
    BeforeValidator(type_from_str),
]


# ----------------------------------------------------------------------------- optimizers
Beta = Annotated[Real, Field(ge=0, lt=1)]


class SGD(Spec):
    type: Literal["sgd"]
    lr: Real = Field(1e-3, gt=0, le=100)
    momentum: Real = Field(0.0, ge=0, lt=1)
    dampening: Real = Field(0.0, ge=0, le=1)
    nesterov: bool = False
    weight_decay: Real = Field(0.0, ge=0, le=10)

    @model_validator(mode="after")
    def _nesterov(self) -> "SGD":
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening = 0 "
                             f"(got momentum={self.momentum}, dampening={self.dampening})")
        return self


class RMSprop(Spec):
    type: Literal["rmsprop"]
    lr: Real = Field(1e-2, gt=0, le=100)
    alpha: Real = Field(0.99, ge=0, lt=1)
    eps: Real = Field(1e-8, gt=0, le=1)
    weight_decay: Real = Field(0.0, ge=0, le=10)
    momentum: Real = Field(0.0, ge=0, lt=1)
    centered: bool = False


class Adam(Spec):
    type: Literal["adam"]
    lr: Real = Field(1e-3, gt=0, le=100)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Real = Field(1e-8, gt=0, le=1)
    weight_decay: Real = Field(0.0, ge=0, le=10)
    amsgrad: bool = False


class AdamW(Adam):
    """Adam with decoupled weight decay: the same fields, torch.optim.AdamW's default decay."""
    type: Literal["adamw"]
    weight_decay: Real = Field(1e-2, ge=0, le=10)


OptimizerSpec = Annotated[
    Union[SGD, RMSprop, Adam, AdamW],
    Field(discriminator="type"),
    BeforeValidator(type_from_str),
]


# ----------------------------------------------------------------------------- schedules
class ScheduleBase(Spec):
    """Schedules advance once per optimizer step; all step counts are optimizer steps."""
    warmup_steps: int = Field(0, ge=0, description="Linear warmup from warmup_start_factor·lr to lr.")
    warmup_start_factor: Real = Field(1 / 3, gt=0, le=1)


class ConstantLR(ScheduleBase):
    type: Literal["constant"]


class StepLR(ScheduleBase):
    type: Literal["step"]
    step_size: int = Field(ge=1)
    gamma: Real = Field(0.1, gt=0, le=1)


class ExponentialLR(ScheduleBase):
    type: Literal["exponential"]
    gamma: Real = Field(gt=0, le=1)


class CosineAnnealingLR(ScheduleBase):
    type: Literal["cosine"]
    t_max: int | None = Field(None, ge=1, description="Absent: the total number of training steps "
                                                      "after warmup.")
    eta_min: Real = Field(0.0, ge=0)


ScheduleSpec = Annotated[
    Union[ConstantLR, StepLR, ExponentialLR, CosineAnnealingLR],
    Field(discriminator="type"),
    BeforeValidator(type_from_str),
]


# ----------------------------------------------------------------------------- training
class EarlyStopping(Spec):
    monitor: Literal["val_loss", "val_accuracy", "val_mae", "val_r2", "train_loss"] = "val_loss"
    patience: int = Field(5, ge=1, le=10_000)
    min_delta: Real = Field(0.0, ge=0)
    restore_best: bool = Field(True, description="Finish with the weights of the best epoch.")


class TrainConfig(Spec):
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1, le=1_000_000)
    validation_split: Real = Field(0.2, ge=0, lt=1, description="Fraction of rows held out "
                                                                 "(the last rows after a seeded shuffle).")
    shuffle: bool = True
    seed: int = Field(0, ge=0, le=2**63 - 1)
    steps_per_epoch: int | None = Field(None, ge=1, le=1_000_000, description=(
        "Language models only: optimizer steps per epoch, each on batch_size windows drawn at seeded random "
        "offsets. Absent: about one pass over the training tokens."))
    grad_clip_norm: Real | None = Field(None, gt=0, description="Global-norm gradient clipping.")
    schedule: ScheduleSpec = ConstantLR(type="constant")
    early_stopping: EarlyStopping | None = None
    diagnostics: Diagnostics = Field(default_factory=Diagnostics, description=(
        "Rules that watch the run and report findings (docs/diagnostics.md); their thresholds, and "
        "which of them stop the run."))
