"""Interleaved timing rounds: every side of a comparison runs back to back in each round (the order
rotating from round to round), so machine load hits them all; a figure is the median of its
rounds and a ratio the median of the per-round ratios (each pair ran under the same load)."""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], object], seconds: float, device: torch.device, grad: bool = True,
         min_calls: int = 3) -> float:
    """Calls per second over consecutive calls for at least `seconds` and `min_calls`.

    grad=False runs them all under one torch.no_grad(), as `fit` runs its whole loop.
    """
    with torch.set_grad_enabled(grad):
        sync(device)
        t0, n = time.perf_counter(), 0
        while n < min_calls or time.perf_counter() - t0 < seconds:
            fn()
            n += 1
            if device.type == "cuda" and n % 16 == 0:
                sync(device)     # bound the queue, so the clock sees the work
        sync(device)
        return n / (time.perf_counter() - t0)


@dataclass
class Side:
    fn: Callable[[], object]
    grad: bool                   # run with autograd on (torch's sides) or under no_grad (the engine's)


@dataclass
class Rounds:
    """Calls per second of each side in each round."""
    rates: dict[str, list[float]] = field(default_factory=dict)

    def median(self, side: str) -> float:
        return statistics.median(self.rates[side])

    def ratio(self, side: str, other: str) -> float:
        """Median over rounds of side / other (>1: side is faster)."""
        return statistics.median(a / b for a, b in zip(self.rates[side], self.rates[other]))

    def ratio_range(self, side: str, other: str) -> tuple[float, float]:
        """(lowest, highest) per-round ratio: the spread printed beside the median."""
        ratios = [a / b for a, b in zip(self.rates[side], self.rates[other])]
        return min(ratios), max(ratios)

    def spread(self) -> float:
        """Largest max / min of any side's round rates."""
        return max(max(v) / min(v) for v in self.rates.values())


def interleave(sides: dict[str, Side], rounds: int, round_s: float, warmup_s: float, device: torch.device,
               after_round: Callable[[], None] | None = None) -> Rounds:
    """`rounds` rounds of `round_s` per side after a warm-up of each; after_round runs after every round."""
    for side in sides.values():
        rate(side.fn, warmup_s, device, side.grad)
    names = list(sides)
    out = Rounds({name: [] for name in names})
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            out.rates[name].append(rate(sides[name].fn, round_s, device, sides[name].grad))
        if after_round is not None:
            after_round()
    return out


class MatmulPeak:
    """float32 torch.mm GFLOP/s on square sizes, sampled in every training round.

    Sampled in every round (not once, up front) and for as long as a side's round, so each
    sample runs under the same machine load as the training steps it is compared with.
    """

    def __init__(self, device: torch.device, sizes=(1024, 2048)):
        self.device, self.samples = device, {n: [] for n in sizes}
        self.mats = {n: (torch.randn(n, n, device=device), torch.randn(n, n, device=device),
                         torch.empty(n, n, device=device)) for n in sizes}
        for a, b, c in self.mats.values():
            torch.mm(a, b, out=c)   # first call: library setup

    def sample(self, duration_s: float) -> float:
        """Time each size for duration_s / len(sizes) (at least one mm); return the best rate."""
        best = 0.0
        for n, (a, b, c) in self.mats.items():
            calls = rate(lambda: torch.mm(a, b, out=c), duration_s / len(self.mats), self.device, min_calls=1)
            gflops = 2 * n ** 3 * calls / 1e9
            self.samples[n].append(gflops)
            best = max(best, gflops)
        return best

    def summary(self) -> dict[str, float]:
        """Median GFLOP/s per size; `peak`: the best of those medians."""
        out = {f"mm{n}": statistics.median(v) for n, v in self.samples.items() if v}
        out["peak"] = max(out.values())
        return out


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): other processes on the CPUs."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_count() -> int | None:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()
