"""unscaled_inputs: input features whose sizes differ by orders of magnitude, found at step 0.

A first linear layer's weight gradient is dW = dZ^T X: each input column scales its weights' gradient.
With one feature near 1000 and another near 0.1, one lr is too big for the first and too small for the
second, and the loss surface is a narrow valley that gradient descent zigzags across. Standardizing
each feature (mean 0, std 1, from the training rows) is the fix.

    scale = input_scale(model, X_train)   # {"ratio", "largest": {"feature", "rms"}, "smallest": ...} or None
    signals = unscaled_inputs(cfg, scale)

A feature's size is its root mean square over the training rows (its spread and its offset both
count); a feature that is 0 everywhere has no scale and is left out. Per feature means per index of
dim 1: a column of (N, D), a channel of (N, C, H, W), as the standardize layer scales them.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .findings import Signal

HINT = ('set "preprocessing": {"standardize": "inputs"} in the job ("both" for a regression, which also scales '
        "the target): each feature is standardized with the training rows' mean and std inside the model, so "
        "predictions still take raw inputs. Scripting the engine: start the network with a standardize layer "
        "holding those means and stds")


def _standardized_first(model) -> bool:
    """A standardize layer (not an inverse one) reads the model input: the data is scaled already."""
    return any(layer.kind == "standardize" and not layer.spec.inverse and -1 in ins
               for layer, ins in zip(model.layers, model.plan.inputs))


@torch.no_grad()
def input_scale(model, x: Tensor) -> dict[str, Any] | None:
    """The largest and smallest feature size of x (N, C, ...) and their ratio; None for token ids, fewer
    than 2 features of nonzero size, or a model that standardizes its input first."""
    if not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0 or _standardized_first(model):
        return None
    dims = [0, *range(2, x.dim())]
    count = x.numel() // x.shape[1]
    rms = (torch.linalg.vector_norm(x.double(), dim=dims) / math.sqrt(count)).cpu()   # (C,)
    sized = (rms > 0).nonzero().flatten()
    if sized.numel() < 2:
        return None
    big, small = sized[rms[sized].argmax()], sized[rms[sized].argmin()]
    largest, smallest = float(rms[big]), float(rms[small])
    return {"ratio": largest / smallest, "features": int(x.shape[1]),
            "largest": {"feature": int(big), "rms": largest}, "smallest": {"feature": int(small), "rms": smallest}}


def unscaled_inputs(cfg, scale: dict[str, Any] | None) -> list[Signal]:
    if scale is None or not scale["ratio"] > cfg.threshold:
        return []
    big, small = scale["largest"], scale["smallest"]
    return [Signal(None, scale["ratio"], cfg.threshold,
                   f"at step 0 the input features' sizes (root mean square over the training rows) differ "
                   f"{scale['ratio']:,.0f}x: feature {big['feature']} is about {big['rms']:.3g} and feature "
                   f"{small['feature']} about {small['rms']:.3g} (counting from 0). A weight's gradient is its "
                   "input times the error, so one lr is too big for the large features and too small for the "
                   "small ones: the inputs are not scaled", HINT)]
