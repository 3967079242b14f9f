"""The engine's speed tricks, each timed with and without it where it matters.

    python bench/engine_vs_torch.py --tricks --threads 1      # or: python bench/engine_tricks.py

Every trick in engine/ is a named function or flag beside its plain form (tests/engine/
test_fast_paths.py checks that both give the same numbers); this is the figure that keeps it.
Each row: the case, what the engine runs there, the best-of-rounds time of the engine's choice
and of the other form (rounds of the two alternate, so load hits both), and other / choice:
above 1, the engine's choice is the faster there.

- log-softmax switch (engine.losses.short_rows_on_cpu): torch's fused kernel, except the formula
  for more than 64 rows of fewer than 16 classes on the CPU, where the kernel walks each short
  row element by element.
- channels-last max pool (engine.layers.pool.CHANNELS_LAST_MIN_CHANNELS): from 8 channels up the
  CPU forward runs the kernel that vectorizes across channels, layout copies included.
- TrainStep under torch.inference_mode against torch.no_grad (autograd's version and view
  bookkeeping); a whole step.
- relu's backward formula (a choice, not a switch): sign(y) * dy, against the bool-mask forms
  torch.where(y > 0, dy, 0) and dy * (y > 0), which this CPU runs without vectorization.
- the layers' and the optimizer's formula choices of issue 9: bench/formula_tricks.py.

Dropped, for want of a figure: a relu overwriting the linear / conv output it reads (x.relu_())
measured 1.01x on every model's training step (best of 15 rounds, 1 thread); the
optimizer's cache of last step's gradient tensors served only opt.step(model.grads()), a
path fit never takes (4 us of a 22 us Adam step on the tiny MLP).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere in the repo

from engine import Model, TrainStep, losses, optim  # noqa: E402
from engine.layers.pool import CHANNELS_LAST_MIN_CHANNELS, max_pool, max_pool_channels_last  # noqa: E402
from engine.losses import log_softmax, log_softmax_kernel, short_rows_on_cpu  # noqa: E402

from bench.cases import CASES  # noqa: E402


def best_us(fns: dict[str, Callable[[], Any]], rounds: int, round_s: float, in_step: bool = True
            ) -> dict[str, float]:
    """Microseconds per call of each fn: the best of `rounds` rounds of `round_s` (at least 3 calls),
    the fns taking turns within each round. in_step: run under torch.inference_mode, as the engine
    runs its kernels inside TrainStep; False for whole TrainSteps, which choose their own mode."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()                                          # warm-up: allocator, kernels' first calls
    with torch.inference_mode() if in_step else contextlib.nullcontext():
        for _ in range(rounds):
            for name, fn in fns.items():
                t0, n = time.perf_counter(), 0
                while n < 3 or time.perf_counter() - t0 < round_s:
                    fn()
                    n += 1
                times[name].append((time.perf_counter() - t0) / n * 1e6)
    return {k: min(v) for k, v in times.items()}


def row(trick: str, case: str, choice: str, other: str, us: dict[str, float]) -> dict[str, Any]:
    return {"trick": trick, "case": case, "engine_runs": choice, "other": other,
            "engine_us": us[choice], "other_us": us[other], "other_over_engine": us[other] / us[choice]}


def train_step(case, inference_mode: bool = True) -> Callable[[], Any]:
    """One TrainStep of a bench model (cross-entropy, Adam) on a fixed batch."""
    model = Model.from_spec({"layers": case.layers}, case.input_shape, seed=0)
    step = TrainStep(model, losses.make("cross_entropy", check_labels=False),
                     optim.make({"type": "adam", "lr": 1e-3}, model.parameters()), inference_mode=inference_mode)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((case.batch, *case.input_shape), generator=g)
    y = torch.randint(0, case.classes, (case.batch,), generator=g)
    return lambda: step(x, y)


def log_softmax_rows(rounds, round_s) -> list[dict[str, Any]]:
    out = []
    for n, c in [(32, 10), (64, 10), (128, 10), (1024, 10), (1024, 2), (128, 16), (1024, 100)]:
        z = torch.randn(n, c)
        us = best_us({"kernel": lambda: log_softmax_kernel(z), "formula": lambda: log_softmax(z)}, rounds, round_s)
        choice = "formula" if short_rows_on_cpu(z) else "kernel"
        out.append(row("log-softmax switch", f"({n}, {c}) logits", choice, "kernel" if choice == "formula"
                       else "formula", us))
    return out


def max_pool_rows(rounds, round_s) -> list[dict[str, Any]]:
    out = []
    for shape, k, s, p in [((64, 8, 28, 28), 2, 2, 0), ((64, 16, 14, 14), 2, 2, 0), ((16, 64, 56, 56), 3, 2, 1),
                           ((64, 3, 28, 28), 2, 2, 0)]:
        x, geometry = torch.randn(shape), ((k, k), (s, s), (p, p))
        us = best_us({"channels-last": lambda: max_pool_channels_last(x, *geometry),
                      "plain": lambda: max_pool(x, *geometry)}, rounds, round_s)
        choice = "channels-last" if shape[1] >= CHANNELS_LAST_MIN_CHANNELS else "plain"
        out.append(row("channels-last max pool (forward)", f"{shape} k{k} s{s} p{p}", choice,
                       "plain" if choice == "channels-last" else "channels-last", us))
    return out


def inference_mode_rows(cases, rounds, round_s) -> list[dict[str, Any]]:
    out = []
    for case in cases:
        if case.name == "wide MLP":
            continue                                  # matmul-bound: Python overhead does not show
        us = best_us({"inference_mode": train_step(case, True), "no_grad": train_step(case, False)},
                     rounds, round_s, in_step=False)
        out.append(row("TrainStep under inference_mode", f"{case.name}, batch {case.batch}", "inference_mode",
                       "no_grad", us))
    return out


def relu_backward_rows(rounds, round_s) -> list[dict[str, Any]]:
    out = []
    for shape in [(32, 64), (64, 128), (1024, 1024), (64, 8, 28, 28)]:
        y, dy = torch.randn(shape).relu_(), torch.randn(shape)
        us = best_us({"sign(y)*dy": lambda: torch.sign(y).mul_(dy),
                      "where(y>0,dy,0)": lambda: torch.where(y > 0, dy, 0),
                      "dy*(y>0)": lambda: dy * (y > 0)}, rounds, round_s)
        for other in ("where(y>0,dy,0)", "dy*(y>0)"):
            out.append(row("relu backward formula", f"{shape}", "sign(y)*dy", other, us))
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'case':<40} {'engine runs':<16} {'us':>9}   {'other':<17} {'us':>9} {'other/engine':>12}"
    lines, trick = [head, "-" * len(head)], None
    for r in rows:
        if r["trick"] != trick:
            trick = r["trick"]
            lines.append(trick)
        lines.append(f"  {r['case']:<38} {r['engine_runs']:<16} {r['engine_us']:>9.1f}   {r['other']:<17} "
                     f"{r['other_us']:>9.1f} {r['other_over_engine']:>11.2f}x")
    return "\n".join(lines)


def run(cases, quick: bool = False, json_path: Path | None = None, rounds: int | None = None
        ) -> list[dict[str, Any]]:
    rounds, round_s = rounds or (1 if quick else 7), 0.005 if quick else 0.1
    if quick:
        cases = [c for c in cases if c.name != "wide MLP"]
    print(f"engine tricks, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"best of {rounds} rounds of ~{round_s} s per side")
    from bench import formula_tricks             # it imports this module's best_us and row
    rows = (log_softmax_rows(rounds, round_s) + max_pool_rows(rounds, round_s)
            + inference_mode_rows(cases, rounds, round_s) + relu_backward_rows(rounds, round_s)
            + formula_tricks.rows(rounds, round_s))
    print(table(rows))
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short round per side (smoke test)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", type=Path, help="save the rows here")
    ap.add_argument("--rounds", type=int, help="rounds per side (default 7, quick 1); more on a busy machine")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run(CASES, args.quick, args.json, args.rounds)
