"""The update rules, sorted in order of increasing complexity: torch.optim's single-tensor
SGD, RMSprop, Adam and AdamW, op for op (see the package docstring)."""
from __future__ import annotations

from typing import ClassVar

import torch

from .base import Optimizer


class SGD(Optimizer):
    name = "sgd"

    def buffer_names(self) -> list[str]:
        return ["momentum_buffer"] if self.spec.momentum != 0 else []

    def _update(self, p, g, state, scratch):
        wd, mom, damp = self.spec.weight_decay, self.spec.momentum, self.spec.dampening
        if wd != 0:
            g = torch.add(g, p, alpha=wd, out=scratch)
        if mom != 0:
            buf = state["momentum_buffer"]
            if self.steps == 1:  # torch: buf = grad.clone() on the first step
                buf.copy_(g)
            else:
                buf.mul_(mom).add_(g, alpha=1 - damp)
            g = torch.add(g, buf, alpha=mom, out=scratch) if self.spec.nesterov else buf
        p.add_(g, alpha=-self.lr)


class RMSprop(Optimizer):
    name = "rmsprop"

    def buffer_names(self) -> list[str]:
        return (["square_avg"] + (["momentum_buffer"] if self.spec.momentum > 0 else [])
                + (["grad_avg"] if self.spec.centered else []))

    def _update(self, p, g, state, scratch):
        spec = self.spec
        alpha = spec.alpha
        if spec.weight_decay != 0:
            g = torch.add(g, p, alpha=spec.weight_decay, out=scratch)
        square_avg = state["square_avg"]
        square_avg.mul_(alpha).addcmul_(g, g, value=1 - alpha)
        if spec.centered:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(g, 1 - alpha)
            avg = torch.addcmul(square_avg, grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = torch.sqrt(square_avg)          # a temporary even with scratch: g is read after it
        avg.add_(spec.eps)
        if spec.momentum > 0:
            buf = state["momentum_buffer"]
            buf.mul_(spec.momentum).addcdiv_(g, avg)
            p.add_(buf, alpha=-self.lr)
        else:
            p.addcdiv_(g, avg, value=-self.lr)


class Adam(Optimizer):
    name = "adam"
    decoupled: ClassVar[bool] = False

    def buffer_names(self) -> list[str]:
        return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if self.spec.amsgrad else [])

    def _update(self, p, g, state, scratch):
        spec = self.spec
        beta1, beta2 = spec.betas
        lr, wd = self.lr, spec.weight_decay
        if wd != 0:
            if self.decoupled:
                p.mul_(1 - lr * wd)
            else:
                g = torch.add(g, p, alpha=wd, out=scratch)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step = float(self.steps)  # torch keeps step as a float tensor and reads it with .item()
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        if spec.amsgrad:
            max_sq = state["max_exp_avg_sq"]
            torch.maximum(max_sq, exp_avg_sq, out=max_sq)
            exp_avg_sq = max_sq
        # torch: denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps); in place on one
        # temporary (or on the spent gradient: g is not read after this) the roundings are the same
        denom = torch.sqrt(exp_avg_sq, out=scratch).div_(bias_correction2_sqrt).add_(spec.eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)


class AdamW(Adam):
    name = "adamw"
    decoupled = True
