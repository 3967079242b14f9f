"""The run so far, as the rules read it: the epochs' metrics, and the running bests they are judged by.

Kept incrementally (O(1) per epoch), so a rule's look back over a long run costs nothing:
best_train[i] is the smallest finite training loss of epochs 0..i (inf before one), best_val_index
the epoch index of the smallest finite validation loss so far.
"""
from __future__ import annotations

import math
from typing import Any


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


class Trace:
    def __init__(self, initial_loss: float | None = None):
        self.initial_loss = initial_loss       # the loss at step 0 (the init report's), if measured
        self.history: list[dict[str, Any]] = []
        self.best_train: list[float] = []
        self.best_val_index: int | None = None
        self.peak_lr: float | None = None

    def add(self, metrics: dict[str, Any]) -> None:
        loss = metrics.get("train_loss")
        best = self.best_train[-1] if self.best_train else math.inf
        self.best_train.append(min(best, loss) if _finite(loss) else best)
        val = metrics.get("val_loss")
        if _finite(val) and (self.best_val_index is None or val < self.history[self.best_val_index]["val_loss"]):
            self.best_val_index = len(self.history)
        lr = metrics.get("lr")
        if _finite(lr):
            self.peak_lr = lr if self.peak_lr is None else max(self.peak_lr, lr)
        self.history.append(metrics)

    @property
    def now(self) -> dict[str, Any]:
        return self.history[-1]

    @property
    def previous(self) -> dict[str, Any] | None:
        return self.history[-2] if len(self.history) >= 2 else None

    def weighted_layers(self, metrics: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        """(key, grad_norm) of every layer with parameters, input to output."""
        layers = (metrics or self.now).get("layers") or {}
        return [(key, e["grad_norm"]) for key, e in layers.items() if "grad_norm" in e]
