"""Epoch metrics: loss with accuracy (classification) or MAE and R^2 (regression), and `evaluate`."""
from __future__ import annotations

import math

import torch
from torch import Tensor


class Meter:
    """Per-epoch accumulation of the training metrics, on the device (no per-step sync)."""

    def __init__(self, kind: str, width: int, device, ss_tot: Tensor | None):
        self.kind, self.ss_tot = kind, ss_tot
        self.loss_sum, self.n = 0.0, 0
        f64 = dict(dtype=torch.float64, device=device)
        if kind == "regression":
            self.abs_sum, self.sq_sum = torch.zeros(width, **f64), torch.zeros(width, **f64)
        else:
            self.correct = torch.zeros((), dtype=torch.int64, device=device)
            self.tokens = 0

    def add(self, out: Tensor, yb: Tensor, value: float) -> None:
        n = out.shape[0]
        self.loss_sum += value * n
        self.n += n
        if self.kind == "language_model":       # accuracy per token: every position predicts the next
            self.correct += (out.argmax(dim=-1) == yb).sum()
            self.tokens += yb.numel()
        elif self.kind == "cross_entropy":
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
            out[f"{prefix}_r2"] = r2(self.sq_sum, self.ss_tot)
        elif self.kind == "language_model":
            out[f"{prefix}_accuracy"] = int(self.correct) / max(self.tokens, 1)
            out[f"{prefix}_perplexity"] = perplexity(out[f"{prefix}_loss"])
        else:
            out[f"{prefix}_accuracy"] = int(self.correct) / n
        return out


def ss_total(y: Tensor) -> Tensor:
    """Per output column, the sum of squares about its mean (R^2's denominator), in float64."""
    y = y.to(torch.float64)
    return ((y - y.mean(dim=0)) ** 2).sum(dim=0)


def r2(ss_res: Tensor, ss_tot: Tensor) -> float:
    """Mean over outputs of 1 - SS_res / SS_tot (sklearn's r2_score, uniform average)."""
    vals = []
    for res, tot in zip(ss_res.tolist(), ss_tot.tolist()):
        vals.append(1.0 - res / tot if tot > 0 else (1.0 if res == 0 else 0.0))
    return sum(vals) / len(vals)


def metric_kind(loss_name: str, task: str) -> str:
    """"cross_entropy" / "bce_with_logits" (accuracy) for classification, else "regression"."""
    if task == "language_model":
        return "language_model"
    return loss_name if task == "classification" else "regression"


@torch.no_grad()
def evaluate(model, loss, X: Tensor, y: Tensor, *, task: str, batch_size: int,
             prefix: str = "val", ss_tot: Tensor | None = None) -> dict[str, float]:
    """Eval-mode (training=False) loss and metrics of prepared data, in batches."""
    kind = metric_kind(loss.name, task)
    width = y.shape[1] if y.dim() == 2 else 1
    meter = Meter(kind, width, X.device, ss_total(y) if ss_tot is None and kind == "regression" else ss_tot)
    loss_sum = torch.zeros((), dtype=torch.float64, device=X.device)
    for i in range(0, X.shape[0], batch_size):
        xb, yb = X[i:i + batch_size], y[i:i + batch_size]
        out = model.forward(xb, False)
        loss_sum += loss.forward(out, yb).to(torch.float64) * xb.shape[0]
        meter.add(out, yb, 0.0)
    result = meter.result(prefix)
    result[f"{prefix}_loss"] = float(loss_sum) / max(X.shape[0], 1)
    if f"{prefix}_perplexity" in result:
        result[f"{prefix}_perplexity"] = perplexity(result[f"{prefix}_loss"])
    return result


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats per token); inf past float range."""
    return math.exp(loss) if loss < 700 else math.inf
