"""The network table (training-step throughput per network, every side) and the batch-size sweep."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .cases import Case
from .rounds import MatmulPeak, Side, interleave
from .sides import build, compiled_sides, step_flops

COMPILED = ("torch.compile", "engine+compile")


@dataclass
class Result:
    model: str
    batch: int
    engine_steps_s: float          # medians over rounds
    torch_steps_s: float
    ratio: float                   # median over rounds of engine / torch steps/s in the same round
    ratio_range: tuple[float, float]   # lowest and highest round's ratio
    engine_gflops: float
    torch_gflops: float
    engine_pct_peak: float         # median over rounds of engine GFLOP/s / that round's matmul peak
    engine_pct_peak_best: float    # best engine round / best peak sample (load only ever slows a round)
    flops_per_step: int
    adam: str
    engine_rounds: list[float] = field(default_factory=list)   # steps/s of each round
    torch_rounds: list[float] = field(default_factory=list)
    peak_rounds: list[float] = field(default_factory=list)     # matmul peak GFLOP/s sampled in each round
    # per compiled side: steps_s, ratio (to torch eager), ratio_range, cold_start_s; or missing: why
    compiled: dict[str, dict[str, Any]] = field(default_factory=dict)


def bench_case(case: Case, device: str, peak: MatmulPeak, rounds: int, round_s: float, warmup_s: float,
               compile_sides: bool = True, batch: int | None = None) -> Result:
    """Rounds of `round_s` per side, every side back to back (the order rotating), each round followed
    by a matmul-peak sample of the same length."""
    p = build(case, device, batch=batch)
    batch = batch or case.batch
    dev = p.model.device
    flops = step_flops(p.model, batch)
    sides = {"engine": Side(p.engine_step, False), "torch": Side(p.torch_step, True)}
    cold, missing = {}, {}
    if compile_sides:
        steps, cold, missing = compiled_sides(p)
        sides.update({name: Side(fn, name == "torch.compile") for name, fn in steps.items()})
    peaks: list[float] = []
    got = interleave(sides, rounds, round_s, warmup_s, dev, after_round=lambda: peaks.append(peak.sample(round_s)))
    e, t = got.rates["engine"], got.rates["torch"]
    pcts = [100 * rate * flops / 1e9 / pk for rate, pk in zip(e, peaks)]
    compiled: dict[str, dict[str, Any]] = {name: {"missing": why} for name, why in missing.items()}
    for name in cold:
        compiled[name] = {"steps_s": got.median(name), "ratio": got.ratio(name, "torch"),
                          "ratio_range": got.ratio_range(name, "torch"), "cold_start_s": cold[name]}
    return Result(case.name, batch, got.median("engine"), got.median("torch"), got.ratio("engine", "torch"),
                  got.ratio_range("engine", "torch"), got.median("engine") * flops / 1e9,
                  got.median("torch") * flops / 1e9, statistics.median(pcts),
                  100 * max(e) * flops / 1e9 / max(peaks), flops, p.adam, e, t, peaks, compiled)


def table(results: list[Result], peak: dict[str, float]) -> str:
    head = (f"{'model':<11} {'batch':>5} {'engine st/s':>11} {'torch st/s':>10} {'eng/torch':>9} {'rounds':>13} "
            f"{'eng GFLOP/s':>11} | {'torch.compile':>13} {'engine+compile':>14}")
    lines = [head, "-" * len(head)]
    for r in results:
        lo, hi = r.ratio_range
        extra = " ".join(_compiled_cell(r.compiled.get(name), width) for name, width in zip(COMPILED, (13, 14)))
        lines.append(f"{r.model:<11} {r.batch:>5} {r.engine_steps_s:>11.1f} {r.torch_steps_s:>10.1f} "
                     f"{r.ratio:>8.2f}x {f'[{lo:.2f}-{hi:.2f}]':>13} {r.engine_gflops:>11.1f} | {extra}")
    sizes = ", ".join(f"{k[2:]}²: {v:.1f}" for k, v in peak.items() if k.startswith("mm"))
    lines.append(f"float32 torch.mm peak: {peak['peak']:.1f} GFLOP/s ({sizes})")
    lines.append("eng/torch: median over rounds of engine / torch eager steps per second in the same round; "
                 "[lowest-highest] round. Compiled columns: their steps/s over torch eager's, the same way")
    for r in results:
        if r.model == "wide MLP":
            lines.append(f"wide MLP: engine at {r.engine_pct_peak:.1f}% of the matmul peak (median over rounds of "
                         f"engine GFLOP/s / the peak sampled in the same round); best round / best peak sample: "
                         f"{r.engine_pct_peak_best:.1f}%")
    cold = [f"{r.model}: " + ", ".join(f"{name} {c['cold_start_s']:.1f} s" for name, c in r.compiled.items()
                                         if "cold_start_s" in c) for r in results if r.compiled]
    if cold:
        lines.append("cold start (the first step, compiling included): " + "; ".join(cold))
    missing = {why for r in results for c in r.compiled.values() if (why := c.get("missing"))}
    for why in sorted(missing):
        lines.append(f"not compiled: {why}")
    return "\n".join(lines)


def _compiled_cell(entry: dict[str, Any] | None, width: int) -> str:
    if entry is None or "ratio" not in entry:
        return f"{'-':>{width}}"
    return f"{entry['ratio']:>{width - 1}.2f}x"


def sweep_table(results: list[Result]) -> str:
    head = f"{'batch':>6} {'engine st/s':>11} {'torch st/s':>10} {'eng/torch':>9} {'rounds':>13} {'eng GFLOP/s':>11}"
    lines = [f"{results[0].model}, batch-size sweep" if results else "", head, "-" * len(head)]
    for r in results:
        lo, hi = r.ratio_range
        lines.append(f"{r.batch:>6} {r.engine_steps_s:>11.1f} {r.torch_steps_s:>10.1f} {r.ratio:>8.2f}x "
                     f"{f'[{lo:.2f}-{hi:.2f}]':>13} {r.engine_gflops:>11.1f}")
    return "\n".join(lines)
