"""Data parallelism, timed: scaling 1 -> 2 processes (1 thread each), the overlap's gain, and torch DDP.

    python bench/distributed_scaling.py                       # wide MLP and small CNN, 10 timed steps
    python bench/distributed_scaling.py --steps 30 --json dp.json

Per case, the per-process batch is fixed (weak scaling, as Horovod's figure): one process trains on
B rows a step, two processes on 2B (B each). Rows:
  - engine, 1 process: TrainStep (no process group at all)
  - engine, 2 processes: DataParallel, buckets all-reduced as the backward finishes them (overlap)
  - engine, 2 processes, no overlap: the same buckets all-reduced after the whole backward
  - torch, 1 process / torch DDP, 2 processes: the twin (chainrule.twin) with torch.optim.SGD
  - two controls that say where the time of 2 processes goes: "2 processes, no communication" (each
    rank a plain TrainStep on its B rows, nothing exchanged: what running two at once costs on
    these cores) and "all-reduce alone" (the flat gradient buffer all-reduced, nothing computed)
Scaling efficiency = (step time with 1 process) / (step time with 2): 1.0 is perfect. gloo on CPU,
ranks spawned on loopback (torch.multiprocessing, start method spawn), median of the timed steps of
rank 0. Other work on the same cores slows every row: the load average is printed beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.cases import CASES  # noqa: E402
from chainrule.twin import twin  # noqa: E402
from engine import Model, losses, optim  # noqa: E402
from engine.train import TrainStep  # noqa: E402
from engine.train.distributed import DataParallel  # noqa: E402

SGD = {"type": "sgd", "lr": 0.01, "momentum": 0.9}
BENCH_CASES = {"wide MLP": 256, "small CNN": 64}      # name -> rows per process per step
WARMUP = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(case, rows: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, *case.input_shape, generator=gen), torch.randint(0, case.classes, (rows,), generator=gen)


def _time_steps(step, case, rows: int, steps: int, world: int = 1) -> list[float]:
    times = []
    for i in range(WARMUP + steps):
        xb, yb = _batch(case, rows, i)
        if world > 1:
            dist.barrier()
        started = time.perf_counter()
        step(xb, yb)
        times.append(time.perf_counter() - started)
    return times[WARMUP:]


def _engine_step(case, parallel: DataParallel | None):
    model = Model.from_spec({"layers": case.layers}, case.input_shape, seed=0)
    opt = optim.make(SGD, model.parameters())
    loss = losses.make("cross_entropy")
    if parallel is None:
        return TrainStep(model, loss, opt)
    parallel.attach(model, seed=0)
    return parallel.step(model, loss, opt, None)


def _torch_step(case, ddp: bool):
    net = twin({"layers": case.layers}, case.input_shape)
    model = torch.nn.parallel.DistributedDataParallel(net) if ddp else net
    opt = torch.optim.SGD(net.parameters(), lr=SGD["lr"], momentum=SGD["momentum"])

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    return step


def _rank(rank: int, world: int, port: int, name: str, rows: int, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    case = next(c for c in CASES if c.name == name)
    found = {}
    for label, make in (("engine", lambda: _engine_step(case, DataParallel())),
                        ("engine, no overlap", lambda: _engine_step(case, DataParallel(overlap=False))),
                        ("torch DDP", lambda: _torch_step(case, ddp=True)),
                        ("engine, no communication", lambda: _engine_step(case, None))):
        found[label] = statistics.median(_time_steps(make(), case, rows, steps, world))
    grads = _engine_step(case, None).model.flat_grads
    found["all-reduce alone"] = statistics.median(_time_steps(lambda xb, yb: dist.all_reduce(grads), case, rows,
                                                              steps, world))
    if rank == 0:
        Path(out).write_text(json.dumps(found))
    dist.destroy_process_group()


def run_case(name: str, rows: int, steps: int) -> dict:
    torch.set_num_threads(1)
    case = next(c for c in CASES if c.name == name)
    one = {"engine": statistics.median(_time_steps(_engine_step(case, None), case, rows, steps)),
           "torch": statistics.median(_time_steps(_torch_step(case, ddp=False), case, rows, steps))}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "two.json")
        mp.spawn(_rank, args=(2, _free_port(), name, rows, steps, out), nprocs=2, join=True)
        two = json.loads(Path(out).read_text())
    model = Model.from_spec({"layers": case.layers}, case.input_shape, seed=0)
    gradient_mb = model.flat_grads.numel() * model.flat_grads.element_size() / 2**20
    return {"case": name, "rows_per_process": rows, "gradient_mb": gradient_mb, "one_process_s": one,
            "two_processes_s": two,
            "scaling_efficiency": {"engine": one["engine"] / two["engine"],
                                   "torch DDP": one["torch"] / two["torch DDP"]},
            "overlap_gain": two["engine, no overlap"] / two["engine"],
            "two_at_once_without_communication": one["engine"] / two["engine, no communication"],
            "bound_from_communication": one["engine"] / (one["engine"] + two["all-reduce alone"]),
            "engine_vs_torch_ddp": two["torch DDP"] / two["engine"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--case", action="append", choices=sorted(BENCH_CASES))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    rows = []
    for name in args.case or list(BENCH_CASES):
        rows.append(run_case(name, BENCH_CASES[name], args.steps))
        r = rows[-1]
        print(f"{name:10s} B={r['rows_per_process']:4d}  1 proc: engine {r['one_process_s']['engine'] * 1e3:7.1f} ms, "
              f"torch {r['one_process_s']['torch'] * 1e3:7.1f} ms | 2 procs: engine "
              f"{r['two_processes_s']['engine'] * 1e3:7.1f} ms, no overlap "
              f"{r['two_processes_s']['engine, no overlap'] * 1e3:7.1f} ms, torch DDP "
              f"{r['two_processes_s']['torch DDP'] * 1e3:7.1f} ms | efficiency engine "
              f"{r['scaling_efficiency']['engine']:.2f}, torch {r['scaling_efficiency']['torch DDP']:.2f}; "
              f"overlap gain {r['overlap_gain']:.2f}x; engine vs DDP {r['engine_vs_torch_ddp']:.2f}x")
        print(f"{'':10s} controls: 2 processes, no communication {r['two_processes_s']['engine, no communication'] * 1e3:7.1f} ms "
              f"(efficiency {r['two_at_once_without_communication']:.2f}); all-reduce of the "
              f"{r['gradient_mb']:.2f} MB gradient alone {r['two_processes_s']['all-reduce alone'] * 1e3:6.2f} ms "
              f"(1 process / (1 process + all-reduce) = {r['bound_from_communication']:.2f})")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "load_average": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
