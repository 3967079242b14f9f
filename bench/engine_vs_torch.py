"""Training-step throughput: chainrule's engine against torch.nn + autograd + torch.optim.

    python bench/engine_vs_torch.py                  # CPU, all four models (~2 min)
    python bench/engine_vs_torch.py --device cuda --json results.json
    python bench/engine_vs_torch.py --quick          # a few steps, for smoke runs
    python bench/engine_vs_torch.py --tricks         # each engine speed trick on and off (~1 min)
    python bench/engine_vs_torch.py --diagnostics    # fit with engine.diagnostics on and off (~1 min)

Both sides train the same network from the same initial weights on the same synthetic
batches with cross-entropy + Adam (lr 1e-3). The engine side is `engine.train.TrainStep`,
the step `fit` runs, under one torch.no_grad() per round as `fit` runs its loop; the torch
side is the textbook loop (zero_grad, forward, loss, backward, step) with the fastest
torch.optim Adam the device has (fused, else foreach). Both read the loss back as a Python
float every step, as `fit` must (its finiteness check).

Timing: warm-up, then `rounds` rounds of `round_s` seconds (at least 3 steps) per side,
the two sides alternating (and swapping who goes first) so machine noise hits both. Steps/s are the
median rounds; the ratio is the median of the per-round ratios (each pair ran back to
back, under the same load). Achieved GFLOP/s counts only matmul / conv FLOPs (see
`step_flops`) and is set beside a float32 torch.mm peak sampled in every round.

Not done: capturing the engine's step in a CUDA graph. Adam's bias corrections are Python
floats that change every step (a graph would replay step 1's) and TrainStep reads the loss
on the host every step; capture would need both moved into device tensors.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere in the repo

from engine import Model, losses, optim, twin  # noqa: E402
from engine.spec import pair  # noqa: E402
from engine.train import TrainStep  # noqa: E402

LR = 1e-3


@dataclass(frozen=True)
class Case:
    name: str
    layers: list[dict]
    input_shape: tuple[int, ...]
    batch: int
    classes: int = 10


CASES = [
    Case("tiny MLP", [{"type": "linear", "out_features": 64}, {"type": "relu"},
                      {"type": "linear", "out_features": 10}], (64,), 32),
    Case("MNIST MLP", [{"type": "linear", "out_features": 128}, {"type": "relu"},
                       {"type": "linear", "out_features": 10}], (784,), 64),
    Case("wide MLP", [{"type": "linear", "out_features": 1024}, {"type": "relu"},
                      {"type": "linear", "out_features": 1024}, {"type": "relu"},
                      {"type": "linear", "out_features": 10}], (1024,), 1024),
    Case("small CNN", [{"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1}, {"type": "relu"},
                       {"type": "maxpool2d", "kernel_size": 2},
                       {"type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1}, {"type": "relu"},
                       {"type": "maxpool2d", "kernel_size": 2},
                       {"type": "flatten"}, {"type": "linear", "out_features": 10}], (1, 28, 28), 64),
]


# ----------------------------------------------------------------------------- the two sides
def torch_module(model: Model) -> nn.Module:
    """The torch.nn twin of an engine model (engine.twin), holding a copy of its weights."""
    net = twin(model.spec, model.input_shape, dtype=model.dtype, device=model.device)
    net.load_state_dict(model.state_dict(), strict=True)
    return net


def torch_adam(params, device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    """The fastest torch.optim.Adam this device runs: fused, else foreach."""
    params = list(params)
    try:
        opt = torch.optim.Adam(params, lr=LR, fused=True)
        return opt, "fused"
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=LR, foreach=True), "foreach"


@dataclass
class Pair:
    """One case built on both sides, same weights; `engine_step()` / `torch_step()` run one step."""
    case: Case
    model: Model
    net: nn.Module
    engine_step: Callable[[], float]
    torch_step: Callable[[], float]
    adam: str


def build(case: Case, device: str, dtype: torch.dtype = torch.float32, n_batches: int = 4,
          batch: int | None = None, seed: int = 0) -> Pair:
    dev = torch.device(device)
    batch = batch or case.batch
    model = Model.from_spec({"layers": case.layers}, case.input_shape, seed=seed, dtype=dtype, device=dev)
    net = torch_module(model)
    g = torch.Generator().manual_seed(seed + 1)
    xs = [torch.randn((batch, *case.input_shape), generator=g, dtype=torch.float64).to(dev, dtype)
          for _ in range(n_batches)]
    ys = [torch.randint(0, case.classes, (batch,), generator=g).to(dev) for _ in range(n_batches)]

    loss = losses.make("cross_entropy", check_labels=False)   # as fit runs it: labels checked once up front
    train_step = TrainStep(model, loss, optim.make({"type": "adam", "lr": LR}, model.parameters()), None)
    t_opt, adam = torch_adam(net.parameters(), dev)
    k_engine = k_torch = 0

    def engine_step() -> float:
        nonlocal k_engine
        i = k_engine % n_batches
        k_engine += 1
        train_step(xs[i], ys[i])
        return train_step.value

    def torch_step() -> float:
        nonlocal k_torch
        i = k_torch % n_batches
        k_torch += 1
        t_opt.zero_grad(set_to_none=True)
        value = F.cross_entropy(net(xs[i]), ys[i])
        value.backward()
        t_opt.step()
        return value.item()

    return Pair(case, model, net, engine_step, torch_step, adam)


# ----------------------------------------------------------------------------- FLOPs
def step_flops(model: Model, batch: int) -> int:
    """Matmul / conv FLOPs of one training step (2 per multiply-add).

    Forward 2·M per layer of M multiply-adds; backward 4·M (weight grad and input grad),
    except the layer that reads the model input, whose input gradient nobody needs: 2·M.
    Elementwise work, the loss and the optimizer are not counted.
    """
    total = 0
    first = True
    for layer in model.layers:
        s = layer.spec
        if s.type == "linear":
            macs = batch * layer.in_shapes[0][0] * s.out_features
        elif s.type == "conv2d":
            c, h, w = layer.in_shapes[0]
            kh, kw = pair(s.kernel_size)
            _, ho, wo = layer.out_shape
            macs = batch * s.out_channels * ho * wo * c * kh * kw
        else:
            continue
        total += 2 * macs + (2 if first else 4) * macs
        first = False
    return total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
            sync(self.device)
            t0, reps = time.perf_counter(), 0
            while reps < 1 or time.perf_counter() - t0 < duration_s / len(self.mats):
                torch.mm(a, b, out=c)
                reps += 1
                if self.device.type == "cuda" and reps % 8 == 0:
                    sync(self.device)
            sync(self.device)
            rate = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9
            self.samples[n].append(rate)
            best = max(best, rate)
        return best

    def summary(self) -> dict[str, float]:
        """Median GFLOP/s per size; `peak`: the best of those medians."""
        out = {f"mm{n}": statistics.median(v) for n, v in self.samples.items() if v}
        out["peak"] = max(out.values())
        return out


# ----------------------------------------------------------------------------- timing
@dataclass
class Result:
    model: str
    batch: int
    engine_steps_s: float          # medians over rounds
    torch_steps_s: float
    ratio: float                   # median over rounds of engine / torch steps/s in the same round
    engine_gflops: float
    torch_gflops: float
    engine_pct_peak: float         # median over rounds of engine GFLOP/s / that round's matmul peak
    engine_pct_peak_best: float    # best engine round / best peak sample (load only ever slows a round)
    flops_per_step: int
    steps_per_round: int           # median over rounds and sides (rounds are timed, not counted)
    adam: str
    engine_rounds: list[float] = field(default_factory=list)   # steps/s of each round
    torch_rounds: list[float] = field(default_factory=list)
    peak_rounds: list[float] = field(default_factory=list)     # matmul peak GFLOP/s sampled in each round


def _time(fn: Callable[[], float], seconds: float, device: torch.device, grad: bool = True,
          min_steps: int = 3) -> tuple[float, int]:
    """(steps per second, steps) over consecutive steps for at least `seconds` and `min_steps`.

    grad=False runs them all under one torch.no_grad(), as `fit` runs its whole loop.
    """
    with torch.set_grad_enabled(grad):
        sync(device)
        t0, n = time.perf_counter(), 0
        while n < min_steps or time.perf_counter() - t0 < seconds:
            fn()
            n += 1
            if device.type == "cuda" and n % 16 == 0:
                sync(device)     # bound the queue, so the clock sees the work
        sync(device)
        return n / (time.perf_counter() - t0), n


def bench_case(case: Case, device: str, peak: MatmulPeak, rounds: int, round_s: float, warmup_s: float) -> Result:
    """Rounds of `round_s` per side, engine and torch back to back (who goes first alternates),
    each round followed by a matmul-peak sample of the same length."""
    p = build(case, device)
    dev = p.model.device
    flops = step_flops(p.model, case.batch)
    sides = {"engine": p.engine_step, "torch": p.torch_step}
    grad = {"engine": False, "torch": True}
    for side, fn in sides.items():       # warm-up
        _time(fn, warmup_s, dev, grad[side])
    got: dict[str, list[float]] = {"engine": [], "torch": []}
    steps: list[int] = []
    pcts, peaks = [], []
    for r in range(rounds):
        for side in (("engine", "torch") if r % 2 == 0 else ("torch", "engine")):
            rate, n = _time(sides[side], round_s, dev, grad[side])
            got[side].append(rate)
            steps.append(n)
        peaks.append(peak.sample(round_s))
        pcts.append(100 * got["engine"][-1] * flops / 1e9 / peaks[-1])
    e, t = statistics.median(got["engine"]), statistics.median(got["torch"])
    ratio = statistics.median(a / b for a, b in zip(got["engine"], got["torch"]))   # paired: same load
    best_pct = 100 * max(got["engine"]) * flops / 1e9 / max(peaks)
    return Result(case.name, case.batch, e, t, ratio, e * flops / 1e9, t * flops / 1e9, statistics.median(pcts),
                  best_pct, flops, int(statistics.median(steps)), p.adam, got["engine"], got["torch"], peaks)


def table(results: list[Result], peak: dict[str, float]) -> str:
    head = f"{'model':<10} {'batch':>5} {'engine st/s':>11} {'torch st/s':>10} {'eng/torch':>9} " \
           f"{'eng GFLOP/s':>11} {'torch GFLOP/s':>13}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.model:<10} {r.batch:>5} {r.engine_steps_s:>11.1f} {r.torch_steps_s:>10.1f} "
                     f"{r.ratio:>8.2f}x {r.engine_gflops:>11.1f} {r.torch_gflops:>13.1f}")
    sizes = ", ".join(f"{k[2:]}²: {v:.1f}" for k, v in peak.items() if k.startswith("mm"))
    lines.append(f"float32 torch.mm peak: {peak['peak']:.1f} GFLOP/s ({sizes})")
    for r in results:
        if r.model == "wide MLP":
            lines.append(f"wide MLP: engine at {r.engine_pct_peak:.1f}% of the matmul peak (median over rounds of "
                         f"engine GFLOP/s / the peak sampled in the same round); best round / best peak sample: "
                         f"{r.engine_pct_peak_best:.1f}%")
    return "\n".join(lines)


def _section(name: str):
    """bench/<name>.py, a section of this benchmark (bench/ is not a package): engine_tricks (--tricks),
    diagnostics_overhead (--diagnostics)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="few short rounds (smoke test)")
    ap.add_argument("--json", type=Path, help="save the results here")
    ap.add_argument("--models", help="comma-separated subset of: " + ", ".join(c.name for c in CASES))
    ap.add_argument("--rounds", type=int, help="timed rounds per side (default 21, quick 1; --tricks: 7)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads for both sides (default: torch's)")
    ap.add_argument("--tricks", action="store_true", help="instead: time each engine speed trick with and "
                                                          "without it (bench/engine_tricks.py)")
    ap.add_argument("--diagnostics", action="store_true", help="instead: time fit on the MNIST MLP with "
                    "engine.diagnostics on and off (bench/diagnostics_overhead.py)")
    args = ap.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked but CUDA is not available; running on cpu")
        device = "cpu"
    cases = CASES
    if args.models:
        wanted = [m.strip() for m in args.models.split(",")]
        unknown = [m for m in wanted if m not in {c.name for c in CASES}]
        if unknown:
            raise SystemExit(f"unknown model(s) {unknown}; valid: {[c.name for c in CASES]}")
        cases = [c for c in CASES if c.name in wanted]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tricks:
        return {"tricks": _section("engine_tricks").run(cases, args.quick, args.json, args.rounds)}
    if args.diagnostics:
        out = {"diagnostics": _section("diagnostics_overhead").run(args.quick, args.rounds)}
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
        return out
    rounds = args.rounds or (1 if args.quick else 21)
    round_s, warmup_s = (0.05, 0.02) if args.quick else (0.3, 1.0)
    dev = torch.device(device)
    peak = MatmulPeak(dev)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{rounds} rounds of ~{round_s} s per side and model")
    results = []
    for case in cases:
        r = bench_case(case, device, peak, rounds, round_s, warmup_s)
        results.append(r)
        print(f"  {case.name}: engine {r.engine_steps_s:.1f} steps/s, torch {r.torch_steps_s:.1f} steps/s "
              f"(torch Adam {r.adam}), rounds engine {[round(x) for x in r.engine_rounds]} "
              f"torch {[round(x) for x in r.torch_rounds]}, ~{r.steps_per_round} steps per round", flush=True)
    summary = peak.summary()
    print()
    print(table(results, summary))
    spread = max(max(v) / min(v) for r in results for v in (r.engine_rounds, r.torch_rounds))
    if spread > 3:
        print(f"warning: round rates vary up to {spread:.0f}x: other processes are taking the CPUs; the "
              f"medians are unreliable (on a shared machine, --threads 1 keeps each side on one core)")
    out = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "matmul_peak_gflops": summary, "results": [asdict(r) for r in results]}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
