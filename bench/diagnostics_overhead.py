"""What engine.diagnostics costs a training run: `fit` on the MNIST MLP with diagnostics on and off.

    python bench/engine_vs_torch.py --diagnostics            # ~1 min on a CPU
    python bench/engine_vs_torch.py --diagnostics --quick

Both sides run the same `fit` (784 -> 128 relu -> 10, Adam, batch 64, synthetic MNIST-sized
data, no validation split) from the same weights; "off" is `diagnostics: {"enabled": false}`,
which still measures gradient health on one batch per epoch, as fit always did. "On" adds the
activation statistics of that batch, the rules after each epoch and the init report (one forward
and backward, and a sha256 of the weights) before the first step. Rounds alternate the two sides
(and who goes first); the overhead is the median over rounds of on / off - 1, each pair run back
to back under the same load. Reported with it, timed apart (a whole fit is noisy on a shared
machine): the init report, once per run; the measured step's extra statistics and the rules,
once per epoch, as a share of an epoch of 938 steps (MNIST's 60,000 rows) and of 64 steps.
"""
from __future__ import annotations

import statistics
import time

import torch

from engine import Model, fit, health, losses, optim
from engine.diagnostics import ActivationStats, Diagnosis, Diagnostics, init_report

SPEC = {"layers": [{"type": "linear", "out_features": 128}, {"type": "relu"}, {"type": "linear", "out_features": 10}]}


def _data(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(rows, 784, generator=g), torch.randint(0, 10, (rows,), generator=g)


def _fit_seconds(X: torch.Tensor, y: torch.Tensor, epochs: int, diagnostics: bool) -> float:
    model = Model.from_spec(SPEC, (784,), seed=0)
    opt = optim.make({"type": "adam", "lr": 1e-3}, model.parameters())
    config = {"epochs": epochs, "batch_size": 64, "validation_split": 0, "diagnostics": {"enabled": diagnostics}}
    started = time.perf_counter()
    fit(model, losses.make("cross_entropy"), opt, X, y, config, task="classification")
    return time.perf_counter() - started


def _per_epoch_seconds(X: torch.Tensor, y: torch.Tensor, repeats: int = 200) -> tuple[float, float]:
    """(seconds, seconds): the health step's forward and read-back with ActivationStats and with
    OutputStats (what the epoch's measured step pays on each side), then the rules on its numbers."""
    model = Model.from_spec(SPEC, (784,), seed=0)
    spans = health.param_spans(model)
    flat = model.flat_params.clone()

    def measured(observer) -> dict:
        model.forward(X[:64], True, observe=observer)
        return health.layer_health(model, model.flat_grads, flat, observer, spans)
    sides = {"on": ActivationStats, "off": health.OutputStats}
    took = {"on": 0.0, "off": 0.0}
    with torch.no_grad():
        for _ in range(repeats):
            for side, observer in sides.items():
                started = time.perf_counter()
                measured(observer())
                took[side] += time.perf_counter() - started
        layers = measured(ActivationStats())
    diagnosis = Diagnosis(Diagnostics(), {"loss": 2.3, "layers": {}})
    started = time.perf_counter()
    for epoch in range(1, repeats + 1):
        diagnosis.after_epoch({"epoch": epoch, "train_loss": 1.0, "lr": 1e-3, "steps": epoch, "layers": layers})
    rules = (time.perf_counter() - started) / repeats
    return (took["on"] - took["off"]) / repeats, rules


def _init_report_seconds(X: torch.Tensor, y: torch.Tensor, repeats: int = 20) -> float:
    model = Model.from_spec(SPEC, (784,), seed=0)
    loss = losses.make("cross_entropy")
    started = time.perf_counter()
    for _ in range(repeats):
        init_report(model, loss, X[:64], y[:64])
    return (time.perf_counter() - started) / repeats


def run(quick: bool = False, rounds: int | None = None) -> dict:
    rows, epochs = (4096, 1) if quick else (60_000, 1)
    rounds = rounds or (1 if quick else 7)
    X, y = _data(rows)
    _fit_seconds(X[:2048], y[:2048], 1, True)                   # warm-up
    on, off, ratios = [], [], []
    for r in range(rounds):
        sides = (True, False) if r % 2 == 0 else (False, True)
        got = {side: _fit_seconds(X, y, epochs, side) for side in sides}
        on.append(got[True])
        off.append(got[False])
        ratios.append(got[True] / got[False])
    steps = epochs * -(-rows // 64)
    out = {"model": "MNIST MLP", "rows": rows, "epochs": epochs, "steps_per_run": steps, "rounds": rounds,
           "fit_s_on": statistics.median(on), "fit_s_off": statistics.median(off),
           "overhead_pct": 100 * (statistics.median(ratios) - 1), "init_report_ms": 1e3 * _init_report_seconds(X, y),
           "rounds_on": on, "rounds_off": off}
    stats_s, rules_s = _per_epoch_seconds(X, y)
    per_step = out["fit_s_off"] / steps
    out.update({"per_epoch_stats_ms": 1e3 * stats_s, "per_epoch_rules_ms": 1e3 * rules_s, "step_ms": 1e3 * per_step,
                "per_epoch_pct_at_64_steps": 100 * (stats_s + rules_s) / (64 * per_step),
                "per_epoch_pct_at_938_steps": 100 * (stats_s + rules_s) / (938 * per_step)})
    print(f"diagnostics overhead on fit, MNIST MLP, {rows} rows x {epochs} epoch ({steps} steps), "
          f"{torch.get_num_threads()} threads, {rounds} rounds per side:")
    print(f"  fit with diagnostics {out['fit_s_on']:.3f} s, without {out['fit_s_off']:.3f} s (medians); "
          f"overhead {out['overhead_pct']:+.2f}% (median of paired rounds)")
    print(f"  of which the init report, once per run: {out['init_report_ms']:.2f} ms; per epoch, the activation "
          f"statistics {out['per_epoch_stats_ms']:.3f} ms and the rules {out['per_epoch_rules_ms']:.3f} ms")
    print(f"  per epoch that is {out['per_epoch_pct_at_938_steps']:.3f}% of an MNIST epoch (938 steps of "
          f"{out['step_ms']:.2f} ms) and {out['per_epoch_pct_at_64_steps']:.2f}% of a 64-step epoch")
    spread = max(max(v) / min(v) for v in (on, off))
    if spread > 1.5:
        print(f"  warning: rounds vary up to {spread:.1f}x: other processes share the CPUs (more --rounds help)")
    return out
