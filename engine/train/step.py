"""TrainStep: one optimizer step, the per-step math `fit` runs and the benchmark times."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..model import Observer
from ..optim import clip_grad_norm_
from .errors import NonFiniteError, find_nonfinite_layer


class TrainStep:
    """One optimizer step: forward (training mode), loss, backward, non-finite check,
    optional global-norm clipping, update. `fit` runs exactly this; so does the benchmark.

    The caller sets `optimizer.lr` before each call. After a call, `output` is the batch's
    model output and `value` the loss as a float. Split in two (`forward_backward`, then
    `apply`) so `fit` can look at the gradients between them once per epoch: `apply` spends
    them (the optimizer's temporaries go into the gradient buffer), so after it
    `model.grads()` holds no gradient until the next backward.

    inference_mode: each public entry runs under torch.inference_mode (True) or
    torch.no_grad (False); the numbers are the same. The engine needs no autograd, and
    inference mode also skips autograd's bookkeeping of versions and views, which a small
    model's step feels (the benchmark's --tricks section has the figure).
    """

    def __init__(self, model, loss, optimizer, grad_clip_norm: float | None = None, *,
                 inference_mode: bool = True):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        self.flat_grads: Tensor = model.flat_grads
        self.output: Tensor | None = None
        self.value: float = math.nan
        # one context object, reused (entered one at a time): not one made per step
        self._no_autograd = torch.inference_mode() if inference_mode else torch.no_grad()

    def forward_backward(self, xb: Tensor, yb: Tensor, observe: Observer | None = None) -> Tensor:
        """Loss and gradients of a batch; raises NonFiniteError (no step/epoch) on a NaN/inf loss.
        observe: passed to Model.forward, to see each layer's output."""
        with self._no_autograd:
            return self._forward_backward(xb, yb, observe)

    def apply(self) -> None:
        """Clip (if configured) and update with the gradients of the last forward_backward."""
        with self._no_autograd:
            self._apply()

    def __call__(self, xb: Tensor, yb: Tensor) -> Tensor:
        with self._no_autograd:                  # entered once for both halves
            loss = self._forward_backward(xb, yb, None)
            self._apply()
        return loss

    def _forward_backward(self, xb: Tensor, yb: Tensor, observe: Observer | None) -> Tensor:
        out = self.model.forward(xb, True, observe=observe)
        loss = self.loss.forward(out, yb)
        value = self._backward(loss)
        self.output, self.value = out, value
        if not math.isfinite(value):
            key, kind, found_in = find_nonfinite_layer(self.model)
            raise NonFiniteError.describe(value, None, None, key, kind, found_in)
        return loss

    def _backward(self, loss: Tensor) -> float:
        """Fill the gradients; the loss as a float (data parallelism: the global batch's)."""
        self.model.backward(self.loss.backward(), need_input_grad=False)   # training needs no dL/dinput
        return loss.item()                       # the one host sync per step: the finiteness check

    def _apply(self) -> None:
        if self.grad_clip_norm is not None:
            clip_grad_norm_(self.flat_grads, self.grad_clip_norm)
        # the gradients are spent once applied (the next backward overwrites them): the optimizer
        # writes its temporaries there instead of allocating parameter-sized ones every step
        self.optimizer.step(self.flat_grads, reuse_grads=True)
