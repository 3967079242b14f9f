"""The `diagnostics` of a training config: which rules run, their thresholds, and which stop the run.

    "diagnostics": {"rules": {"dead_relu": {"threshold": 0.6}, "update_ratio": {"enabled": false}},
                    "stop_on": ["divergence", "exploding_gradient"]}

Every rule is on by default with the thresholds below (engine/diagnostics/rules.py evaluates
them; docs/diagnostics.md says why each default is what it is). A rule name that is not in
RULES is refused with the list of valid ones, in `rules` as in `stop_on`.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from .base import Real, Spec


class Rule(Spec):
    enabled: bool = True


class VanishingGradient(Rule):
    threshold: Real = Field(1e-3, gt=0, lt=1, description="A layer's gradient norm over the last layer's: "
                            "below it (three orders of magnitude), the gradient vanishes on its way back.")
    floor: Real = Field(1e-8, ge=0, description="An absolute gradient norm below which a layer no longer "
                        "learns (an SGD step lr x g under float32's resolution of a unit weight).")
    consecutive: int = Field(2, ge=1, le=1000, description="Epochs in a row the condition must hold.")


class ExplodingGradient(Rule):
    threshold: Real = Field(1e4, gt=0, description="A layer's gradient norm above this explodes.")
    growth: Real = Field(100.0, gt=1, description="A layer's gradient norm growing by more than this "
                         "factor from one epoch to the next explodes.")


class DeadRelu(Rule):
    threshold: Real = Field(0.5, gt=0, le=1, description="Fraction of a relu's units that output 0 for "
                            "every sample of the measured batch.")


class SaturatedActivation(Rule):
    threshold: Real = Field(0.5, gt=0, le=1, description="Fraction of a sigmoid's or tanh's outputs whose "
                            "derivative is below 1% of its maximum.")


class PoorInitialization(Rule):
    threshold: Real = Field(10.0, gt=1, description="At step 0, the activation std of the last hidden "
                            "layer over the first's: above this factor, or below its inverse, fires.")


class UpdateRatio(Rule):
    high: Real = Field(0.1, gt=0, description="||update|| / ||weights|| above this: lr too big "
                       "(the usual is about 1e-3).")
    low: Real = Field(1e-6, ge=0, description="||update|| / ||weights|| below this: learning stalls "
                      "(not judged while a schedule has brought lr under 10% of its peak).")


class LossNotDecreasing(Rule):
    threshold: Real = Field(1e-3, ge=0, lt=1, description="Relative decrease of the training loss below "
                            "its best that counts as progress.")
    patience: int = Field(5, ge=1, le=10_000, description="Epochs without progress before it fires.")


class Overfitting(Rule):
    threshold: Real = Field(0.1, gt=0, description="Relative rise of the validation loss above its best.")
    patience: int = Field(3, ge=1, le=10_000, description="Epochs since the best validation loss.")


class Divergence(Rule):
    threshold: Real = Field(10.0, gt=1, description="The training loss over the smaller of the loss at "
                            "step 0 and its best so far: above this factor (and above the loss at step 0) "
                            "training diverged.")


class NonFinite(Rule):
    """The loss, a gradient or a weight became NaN or infinite (the run always stops)."""


class AttentionCollapsed(Rule):
    threshold: Real = Field(0.1, gt=0, description="A head's attention entropy in nats (averaged over queries) "
                            "below which each query looks at one token: exp(0.1) = 1.1 tokens' worth.")
    consecutive: int = Field(2, ge=1, le=1000, description="Epochs in a row the condition must hold.")


class AttentionUniform(Rule):
    threshold: Real = Field(0.98, gt=0, le=1, description="A head's attention entropy over the uniform "
                            "attention's (log T, causal: the mean of log(i + 1)) above which it averages.")
    consecutive: int = Field(3, ge=1, le=1000, description="Epochs in a row the condition must hold (every "
                             "head starts near uniform).")


class UnscaledInputs(Rule):
    threshold: Real = Field(100.0, gt=1, description="At step 0, the largest input feature's root mean square "
                            "over the smallest's (training rows): above this factor the inputs need scaling.")


class Rules(Spec):
    vanishing_gradient: VanishingGradient = VanishingGradient()
    exploding_gradient: ExplodingGradient = ExplodingGradient()
    dead_relu: DeadRelu = DeadRelu()
    saturated_activation: SaturatedActivation = SaturatedActivation()
    poor_initialization: PoorInitialization = PoorInitialization()
    unscaled_inputs: UnscaledInputs = UnscaledInputs()
    update_ratio: UpdateRatio = UpdateRatio()
    loss_not_decreasing: LossNotDecreasing = LossNotDecreasing()
    overfitting: Overfitting = Overfitting()
    divergence: Divergence = Divergence()
    attention_collapsed: AttentionCollapsed = AttentionCollapsed()
    attention_uniform: AttentionUniform = AttentionUniform()
    non_finite: NonFinite = NonFinite()

    @model_validator(mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                _check_name(name, "rules")
        return value


RULES: tuple[str, ...] = tuple(Rules.model_fields)


def _check_name(name: Any, where: str) -> None:
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r} in {where}; valid rules: {', '.join(RULES)}")


class Diagnostics(Spec):
    """Activation statistics, the init report and the rules; off: gradient health only, as before."""
    enabled: bool = True
    rules: Rules = Rules()
    stop_on: list[str] = Field(default_factory=list, max_length=len(RULES), description=(
        "Rules whose finding ends the run as failed, with the rule's code as error.code."))

    @field_validator("stop_on")
    @classmethod
    def _stop_on(cls, names: list[str]) -> list[str]:
        for name in names:
            _check_name(name, "stop_on")
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _stoppable(self) -> "Diagnostics":
        off = [n for n in self.stop_on if not getattr(self.rules, n).enabled]
        if off or (self.stop_on and not self.enabled):
            raise ValueError(f"stop_on names {off or self.stop_on}, but diagnostics "
                             + ("are disabled" if not self.enabled else "disables those rules")
                             + ": enable them or remove them from stop_on")
        return self
