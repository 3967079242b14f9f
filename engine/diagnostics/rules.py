"""The rules: each reads one finished epoch (and the run so far, through a Trace) and says which of
its conditions hold now, in the seed's terms. Thresholds come from engine.spec.diagnostics.

A rule is `rule(config, trace) -> [Signal]`; engine.diagnostics.diagnosis turns the onset of a
signal (per rule, layer and threshold) into one Finding, so a condition that lasts is reported
once, not every epoch. poor_initialization reads the init report instead (`initial_signals`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .attention_rules import attention_collapsed, attention_uniform
from .findings import Signal, layer_label
from .trace import Trace

SEVERITY = {"vanishing_gradient": "warning", "exploding_gradient": "error", "dead_relu": "warning",
            "saturated_activation": "warning", "poor_initialization": "warning", "unscaled_inputs": "warning",
            "update_ratio": "warning",
            "loss_not_decreasing": "warning", "overfitting": "warning", "divergence": "error",
            "non_finite": "error", "attention_collapsed": "warning", "attention_uniform": "warning"}
NON_FINITE_HINT = ("lower lr, add grad_clip_norm, standardize the inputs, and check the data for extreme "
                   "values")
INIT_HINT = ("remove `init` from the layers for the defaults (He for layers that feed relu, Xavier for "
             "tanh and sigmoid), or set init to he_normal; batchnorm after each linear also keeps the scale")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _label(trace: Trace, key: str) -> str:
    return layer_label(key, trace.now["layers"][key]["type"])


def vanishing_gradient(cfg, trace: Trace) -> list[Signal]:
    weighted = trace.weighted_layers()
    if len(weighted) < 2:
        return []
    last_key, g_last = weighted[-1]
    if not _finite(g_last) or g_last < cfg.floor:    # every layer that small: converged, or dead (dead_relu)
        return []
    saturating = any(e["type"] in ("sigmoid", "tanh") for e in trace.now["layers"].values())
    hint = ("use relu instead of sigmoid or tanh in deep nets (their derivative is at most 1/4 and 1), or add "
            "batchnorm before them" if saturating else
            "use He initialization for ReLU layers (the default without `init`), add batchnorm, or use "
            "fewer layers or residual connections")
    out = []
    for key, g in weighted[:-1]:
        if not _finite(g):
            continue
        if g < cfg.floor:
            value, threshold, how = g, cfg.floor, f"below the floor of {cfg.floor:.3g}"
        elif g / g_last < cfg.threshold:
            value, threshold, how = g / g_last, cfg.threshold, f"{g / g_last:.2g} times the last layer's ({g_last:.3g})"
        else:
            continue
        out.append(Signal(key, value, threshold, f"{_label(trace, key)}: gradient norm {g:.3g}, {how}, for "
                          f"{cfg.consecutive} epochs: the gradient vanishes on its way back, as the chain rule "
                          "multiplies one local derivative per layer and these shrink it", hint))
    return out


def exploding_gradient(cfg, trace: Trace) -> list[Signal]:
    hint = "lower lr, add grad_clip_norm (e.g. 1.0), use He or Xavier initialization, or add batchnorm"
    before = dict(trace.weighted_layers(trace.previous)) if trace.previous else {}
    out = []
    for key, g in trace.weighted_layers():
        g_before = before.get(key)
        if not _finite(g):
            continue
        if g > cfg.threshold:
            out.append(Signal(key, g, cfg.threshold, f"{_label(trace, key)}: gradient norm {g:.3g}, above "
                              f"{cfg.threshold:.3g}: the gradient explodes, as each layer's local derivatives "
                              "multiply it on its way back", hint))
        elif _finite(g_before) and g_before > 0 and g / g_before > cfg.growth:
            out.append(Signal(key, g / g_before, cfg.growth, f"{_label(trace, key)}: gradient norm grew "
                              f"{g / g_before:.3g}x in one epoch ({g_before:.3g} -> {g:.3g}): the gradient is "
                              "exploding", hint))
    return out


def dead_relu(cfg, trace: Trace) -> list[Signal]:
    out = []
    for key, e in trace.now["layers"].items():
        frac = e.get("dead_fraction")
        if e["type"] in ("relu", "leaky_relu") and _finite(frac) and frac > cfg.threshold:
            gone = "no gradient flows back through them (relu'(z) = 0 for z < 0)" if e["type"] == "relu" else \
                "only the negative slope's fraction of the gradient flows back through them"
            out.append(Signal(key, frac, cfg.threshold, f"{_label(trace, key)}: {frac:.0%} of its units are "
                              f"not positive for any sample of the measured batch: {gone}, so they stop learning",
                              "lower lr (a big step can push a bias far negative), use He initialization, or "
                              "use leaky_relu, which keeps a small gradient for negative inputs"))
    return out


def saturated_activation(cfg, trace: Trace) -> list[Signal]:
    out = []
    for key, e in trace.now["layers"].items():
        frac = e.get("saturated_fraction")
        if _finite(frac) and frac > cfg.threshold:
            derivative = "sigma'(z) = y (1 - y)" if e["type"] == "sigmoid" else "tanh'(z) = 1 - y^2"
            out.append(Signal(key, frac, cfg.threshold, f"{_label(trace, key)}: {frac:.0%} of its outputs are "
                              f"saturated ({derivative} below 1% of its maximum): almost no gradient passes "
                              "back through them",
                              "use relu instead of sigmoid or tanh in deep nets (non-saturating), standardize "
                              "the inputs, add batchnorm before the activation, or lower lr"))
    return out


def update_ratio(cfg, trace: Trace) -> list[Signal]:
    lr, peak = trace.now.get("lr"), trace.peak_lr
    annealed = _finite(lr) and _finite(peak) and lr < 0.1 * peak   # a schedule meant the steps to shrink
    out = []
    for key, e in trace.now["layers"].items():
        ratio = e.get("update_ratio")
        if not _finite(ratio) or "grad_norm" not in e:
            continue
        if ratio > cfg.high:
            out.append(Signal(key, ratio, cfg.high, f"{_label(trace, key)}: one update moved its weights by "
                              f"{ratio:.2g} of their norm (the usual is about 1e-3): lr is too big",
                              "lower lr; an update of about 1e-3 of the weights per step is the usual"))
        elif ratio < cfg.low and not annealed and e["grad_norm"] == 0:
            out.append(Signal(key, ratio, cfg.low, f"{_label(trace, key)}: no gradient reaches it (gradient norm "
                              "0), so its weights did not move: learning stalls",
                              "find what blocks the gradient after it: dead relus (dead_relu), which a lr too big "
                              "usually causes, or saturated activations"))
        elif ratio < cfg.low and not annealed:
            out.append(Signal(key, ratio, cfg.low, f"{_label(trace, key)}: one update moved its weights by "
                              f"{ratio:.2g} of their norm (the usual is about 1e-3): learning stalls",
                              "raise lr, or check that gradients reach this layer (vanishing_gradient)"))
    return out


def loss_not_decreasing(cfg, trace: Trace) -> list[Signal]:
    n = len(trace.history)
    if n <= cfg.patience:
        return []
    best_before, best_now = trace.best_train[n - 1 - cfg.patience], trace.best_train[n - 1]
    if not _finite(best_before) or best_before <= 0 or best_now < best_before * (1 - cfg.threshold):
        return []
    return [Signal(None, 1 - best_now / best_before, cfg.threshold,
                   f"the training loss has not gone {cfg.threshold:.1%} below {best_before:.4g} (its best by "
                   f"epoch {trace.history[n - 1 - cfg.patience]['epoch']}) in the {cfg.patience} epochs since "
                   f"(now {trace.now['train_loss']:.4g}): the optimizer makes no progress, on a plateau or near a "
                   "saddle point, or with a lr too small or too big to descend",
                   "try lr 10x up and down, adam, or a schedule; check that the labels belong to the inputs; "
                   "a loss landscape of the job shows whether it sits near a saddle point")]


def overfitting(cfg, trace: Trace) -> list[Signal]:
    best = trace.best_val_index
    if best is None or len(trace.history) - 1 - best < cfg.patience:
        return []
    then, now = trace.history[best], trace.now
    best_val, val, train = then["val_loss"], now.get("val_loss"), now.get("train_loss")
    if not (_finite(val) and _finite(train)) or best_val <= 0:
        return []
    rise = val / best_val - 1
    if rise <= cfg.threshold or not train < then["train_loss"]:
        return []
    return [Signal(None, rise, cfg.threshold,
                   f"the validation loss rose {rise:.0%} above its best ({best_val:.4g} at epoch {then['epoch']}) "
                   f"while the training loss kept falling ({then['train_loss']:.4g} -> {train:.4g}): the network "
                   "is fitting the noise of the training set",
                   "use early_stopping with restore_best, dropout, weight_decay, a smaller network or more data")]


def divergence(cfg, trace: Trace) -> list[Signal]:
    loss = trace.now.get("train_loss")
    n = len(trace.history)
    best = trace.best_train[n - 2] if n >= 2 else None
    start = trace.initial_loss if _finite(trace.initial_loss) else (
        trace.history[0]["train_loss"] if n >= 2 else None)
    refs = [(v, what) for v, what in ((trace.initial_loss, "the loss at step 0"), (best, "its best"))
            if _finite(v)]
    if not _finite(loss) or not refs or not _finite(start):
        return []
    ref, what = min(refs)
    if not (loss > cfg.threshold * ref and loss > start):
        return []
    factor = loss / ref if ref > 0 else math.inf
    return [Signal(None, factor, cfg.threshold,
                   f"the training loss is {loss:.3g}, {factor:.3g} times {what} ({ref:.4g}): training diverged; "
                   "each step w - lr * grad overshoots and climbs the loss surface instead of descending it",
                   "lower lr (10x smaller to start), add grad_clip_norm, or use adam")]


def non_finite(cfg, trace: Trace) -> list[Signal]:
    now = trace.now
    for name in ("train_loss", "val_loss"):
        if name in now and not _finite(now[name]):
            return [Signal(None, None, None, f"the {name.replace('_', ' ')} is {now[name]}", NON_FINITE_HINT)]
    for key, e in now["layers"].items():
        bad = [f"{name} {e[name]}" for name in ("grad_norm", "weight_norm") if name in e and not _finite(e[name])]
        if bad:
            return [Signal(key, None, None, f"{_label(trace, key)} has non-finite {' and '.join(bad)}",
                           NON_FINITE_HINT)]
    return []


RuleFunction = Callable[[Any, Trace], list[Signal]]
# the order findings of one epoch come in, and so which of several stop_on rules stops a run: the
# run's state first (non-finite, diverged), then what explains it, layer by layer
EPOCH_RULES: dict[str, RuleFunction] = {
    "non_finite": non_finite, "divergence": divergence, "exploding_gradient": exploding_gradient,
    "vanishing_gradient": vanishing_gradient, "dead_relu": dead_relu, "saturated_activation": saturated_activation,
    "update_ratio": update_ratio, "attention_collapsed": attention_collapsed, "attention_uniform": attention_uniform,
    "loss_not_decreasing": loss_not_decreasing, "overfitting": overfitting}


def initial_signals(cfg, report: dict[str, Any]) -> list[Signal]:
    """poor_initialization, from the init report: the activation std across depth at step 0."""
    depth = report.get("depth")
    ratio = depth.get("activation_std_ratio") if depth else None
    if ratio is None or math.isnan(ratio) or 1 / cfg.threshold <= ratio <= cfg.threshold:
        return []
    first, last = depth["first"], depth["last"]
    std_first = report["layers"][first["key"]]["output_std"]
    std_last = report["layers"][last["key"]]["output_std"]
    span = f"from {layer_label(**_kt(first))} to {layer_label(**_kt(last))}"
    if std_first == 0 and std_last == 0:
        what = (f"every hidden layer's output is constant at step 0 (std 0 {span}): with zero weights every "
                "unit computes the same and gets the same gradient, so the units never become different")
    else:
        what = (f"at step 0 the activation std {'grows' if ratio > 1 else 'shrinks'} from {std_first:.3g} at "
                f"{layer_label(**_kt(first))} to {std_last:.3g} at {layer_label(**_kt(last))}, a factor of "
                f"{ratio:.3g} across {depth['hidden_layers']} hidden layers: a good initialization preserves "
                "variance across layers (Xavier, He), and this one does not")
    return [Signal(last["key"], ratio, cfg.threshold if ratio > 1 else 1 / cfg.threshold, what, INIT_HINT)]


def _kt(entry: dict[str, str]) -> dict[str, str]:
    return {"key": entry["key"], "kind": entry["type"]}
