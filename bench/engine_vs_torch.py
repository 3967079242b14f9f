"""Training-step throughput and memory: chainrule's engine against torch.nn + autograd + torch.optim.

    python bench/engine_vs_torch.py --threads 1              # every section, CPU (~15 min)
    python bench/engine_vs_torch.py --sections networks,memory --models "LN MLP"
    python bench/engine_vs_torch.py --device cuda --json results.json
    python bench/engine_vs_torch.py --quick                  # a few steps, for smoke runs
    python bench/engine_vs_torch.py --tricks                 # each engine speed trick on and off
    python bench/engine_vs_torch.py --diagnostics            # fit with engine.diagnostics on and off (~1 min)

Sections (--sections, default all):
  networks  each network of bench/cases.py trained by every side: the engine (`TrainStep`, the
            step `fit` runs, under torch.no_grad as fit runs its loop), torch eager (zero_grad,
            forward, loss, backward, step, with the fastest torch.optim Adam the device has: fused,
            else foreach), torch.compile of that module, and the engine built with compile=True
            (its norms' formulas through torch.compile). The same initial weights and batches,
            cross-entropy + Adam (lr 1e-3); every side reads the loss back as a float every step,
            as fit must (its finiteness check). A compiled side's first step is its cold start
            (compiling included), printed beside the table: with Inductor's on-disk cache empty
            (--compile-cache fresh, the default); the engine's compiled formulas are shared by every
            model of a process, so a network whose norms an earlier one compiled pays less.
            --compile off leaves them out.
  memory    persistent and step-peak bytes of each side (method: bench/memory_use.py).
  layers    each layer type's forward + backward at the size a network above runs it, the
            engine's layer against torch's module + autograd (bench/layer_table.py).
  sweep     the MNIST MLP's step at batch sizes 1 to 4096, engine against torch eager.

Timing (bench/rounds.py): warm-up, then rounds of `round_s` seconds (at least 3 steps) per
side, every side back to back in each round with the order rotating, so machine noise hits all
of them. Steps/s are the median rounds; a ratio is the median of the per-round ratios (each pair
ran back to back, under the same load), printed with the lowest and highest round's ratio.
Achieved GFLOP/s counts only matmul / conv FLOPs (`step_flops`) and is set beside a float32
torch.mm peak sampled in every round. The 1-minute load average is printed before and after:
other processes on the CPUs slow the absolute rates; the paired ratios stand up better.

Not done: capturing the engine's step in a CUDA graph. Adam's bias corrections are Python
floats that change every step (a graph would replay step 1's) and TrainStep reads the loss
on the host every step; capture would need both moved into device tensors.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere in the repo

from bench import layer_table, memory_use, network_table  # noqa: E402
from bench.cases import CASES, LAYER_CASES, SWEEP_BATCHES, SWEEP_CASE  # noqa: E402
from bench.rounds import MatmulPeak, cpu_count, load_average  # noqa: E402
from bench.sides import build, step_flops  # noqa: E402,F401  (build, step_flops: for the smoke test)

LOAD_WARNING = 1.5          # a 1-minute load average above this: other work shares the CPUs


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="few short rounds (smoke test); no compiled sides")
    ap.add_argument("--json", type=Path, help="save the results here")
    ap.add_argument("--models", help="comma-separated subset of: " + ", ".join(c.name for c in CASES))
    sections = "networks,memory,layers,sweep"
    ap.add_argument("--sections", default=sections, help=f"comma-separated subset of: {sections}")
    ap.add_argument("--rounds", type=int, help="timed rounds per side (default 21, quick 1; --tricks: 7)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads for every side (default: torch's)")
    ap.add_argument("--compile", choices=["on", "off"], help="the compiled sides (default on; off with --quick)")
    ap.add_argument("--compile-cache", choices=["fresh", "shared"], default="fresh",
                    help="fresh (default): Inductor's on-disk cache starts empty, so the cold starts are "
                         "first-ever compiles; shared: the user's cache, as a process that ran before left it")
    ap.add_argument("--tricks", action="store_true", help="instead: time each engine speed trick with and "
                                                          "without it (bench/engine_tricks.py)")
    ap.add_argument("--diagnostics", action="store_true", help="instead: time fit on the MNIST MLP with "
                    "engine.diagnostics on and off (bench/diagnostics_overhead.py)")
    return ap.parse_args(argv)


def _cases(models: str | None):
    if not models:
        return CASES
    wanted = [m.strip() for m in models.split(",")]
    unknown = [m for m in wanted if m not in {c.name for c in CASES}]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; valid: {[c.name for c in CASES]}")
    return [c for c in CASES if c.name in wanted]


def _load_note(out: dict[str, Any]) -> str:
    load = [v for v in (out["load_before"], out["load_after"]) if v is not None]
    note = f"1-minute load average: {out['load_before']} before, {out['load_after']} after, on {out['cpus']} CPUs"
    if load and max(load) > LOAD_WARNING:
        note += " -- other processes share the CPUs: absolute rates are low and noisy, paired ratios less so"
    return note


@dataclass
class Run:
    """What every section of one run shares."""
    device: str
    cases: list
    rounds: int
    round_s: float
    warmup_s: float
    compile_sides: bool
    quick: bool
    peak: MatmulPeak


def networks(run: Run, out: dict[str, Any]) -> None:
    results = []
    for case in run.cases:
        r = network_table.bench_case(case, run.device, run.peak, run.rounds, run.round_s, run.warmup_s,
                                     run.compile_sides)
        results.append(r)
        print(f"  {case.name}: engine {r.engine_steps_s:.1f} steps/s, torch {r.torch_steps_s:.1f} steps/s "
              f"(torch Adam {r.adam}), ratio {r.ratio:.2f}", flush=True)
    out["matmul_peak_gflops"] = run.peak.summary()
    out["results"] = [asdict(r) for r in results]
    print("\n" + network_table.table(results, out["matmul_peak_gflops"]), flush=True)


def memory(run: Run, out: dict[str, Any]) -> None:
    rows = {case.name: memory_use.bench_memory(case, run.device) for case in run.cases}
    params = {case.name: build(case, run.device, n_batches=1, batch=2).model.n_parameters * 4 for case in run.cases}
    out["memory"] = {name: {side: asdict(m) for side, m in sides.items()} for name, sides in rows.items()}
    print("\n" + memory_use.table(rows, params), flush=True)


def layers(run: Run, out: dict[str, Any]) -> None:
    if run.device != "cpu":
        return
    cases = LAYER_CASES[:3] if run.quick else LAYER_CASES
    results = [layer_table.bench_layer(c, run.rounds, run.round_s / 3, run.warmup_s / 3, run.compile_sides)
               for c in cases]
    out["layers"] = [asdict(r) for r in results]
    print("\n" + layer_table.table(results), flush=True)


def sweep(run: Run, out: dict[str, Any]) -> None:
    case = next(c for c in CASES if c.name == SWEEP_CASE)
    results = [network_table.bench_case(case, run.device, run.peak, run.rounds, run.round_s / 2, run.warmup_s / 2,
                                        False, batch=b) for b in (SWEEP_BATCHES[:2] if run.quick else SWEEP_BATCHES)]
    out["sweep"] = [asdict(r) for r in results]
    print("\n" + network_table.sweep_table(results), flush=True)


SECTIONS = {"networks": networks, "memory": memory, "layers": layers, "sweep": sweep}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked but CUDA is not available; running on cpu")
        device = "cpu"
    cases = _cases(args.models)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tricks:
        from bench import engine_tricks        # imports the engine's named tricks: only when asked
        return {"tricks": engine_tricks.run(cases, args.quick, args.json, args.rounds)}
    if args.diagnostics:
        from bench import diagnostics_overhead
        out = {"diagnostics": diagnostics_overhead.run(args.quick, args.rounds)}
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
        return out
    sections = [s.strip() for s in args.sections.split(",")]
    if unknown := [s for s in sections if s not in SECTIONS]:
        raise SystemExit(f"unknown section(s) {unknown}; valid: {list(SECTIONS)}")
    compile_sides = (args.compile or ("off" if args.quick else "on")) == "on"
    if compile_sides and args.compile_cache == "fresh":
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_inductor_")
    rounds = args.rounds or (1 if args.quick else 21)
    round_s, warmup_s = (0.05, 0.02) if args.quick else (0.3, 1.0)
    out: dict[str, Any] = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "cpus": cpu_count(), "load_before": load_average()}
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{rounds} rounds of ~{round_s} s per side; load average {out['load_before']}", flush=True)
    run = Run(device, cases, rounds, round_s, warmup_s, compile_sides, args.quick, MatmulPeak(torch.device(device)))
    for name in sections:
        SECTIONS[name](run, out)
    out["load_after"] = load_average()
    print("\n" + _load_note(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
