"""Persistent and peak memory of a training step, for each side, from torch's own allocator events.

torch's CPU allocator keeps no statistics, so each side runs under torch.profiler with
profile_memory=True: every allocation and free through torch's allocator is an event, and each
event carries the bytes allocated while the profiler has been on ("Total Allocated"). A side is
built inside the profiled window (its model, optimizer and step function: so everything it
allocates is counted) and trains `steps` steps on batches made before the window (the data,
shared by both sides, is not counted). Then:

    persistent  bytes still allocated when the last step has returned: what the side keeps
                between steps (parameters, gradients, optimizer state, buffers, anything else)
    peak        the most bytes allocated at once during the last step (persistent included)

Tensors only: the Python objects around them and the C library's own arenas are not counted
(a process RSS would count them, and pages the C library keeps after a free). On CUDA the
device allocator's own statistics (memory_allocated, max_memory_allocated) give the same two.
"""
from __future__ import annotations

import gc
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from engine import Model

from .cases import Case
from .sides import batches, cycle, engine_step_fn, torch_module, torch_step_fn

_STEP = "bench_memory_step"
_MARK = 8          # bytes of the marker allocation


@dataclass
class Memory:
    persistent: int      # bytes
    peak: int            # bytes


def measure(make_step: Callable[[], Callable[[], object]], grad: bool, device: torch.device,
            steps: int = 3) -> Memory:
    """make_step() builds a side and returns its step function; see the module docstring."""
    if device.type == "cuda":
        return _measure_cuda(make_step, grad, device, steps)
    gc.collect()                       # what an earlier side left for the collector is freed before the window
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        torch.empty(_MARK, dtype=torch.uint8)          # the first event: where the count stands at the start
        step = make_step()
        with torch.set_grad_enabled(grad):
            for k in range(steps):
                if k == steps - 1:
                    with record_function(_STEP):
                        step()
                else:
                    step()
        with record_function(_STEP + "_end"):         # a marker: the step's temporaries are freed by now
            pass
    return _from_trace(prof)


def _from_trace(prof) -> Memory:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text())
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    step = next(e for e in events if e.get("name") == _STEP and "dur" in e)
    end = next(e for e in events if e.get("name") == _STEP + "_end")
    start, stop = float(step["ts"]), float(step["ts"]) + float(step["dur"])
    memory = sorted((float(e["ts"]), int(e["args"]["Total Allocated"])) for e in events
                    if e.get("name") == "[memory]" and int(e["args"].get("Device Type", 0)) == 0)
    # the count runs on from earlier profiled windows: the marker's event says where this one starts
    base = memory[0][1] - _MARK
    before = [total for ts, total in memory if ts < start]
    during = [total for ts, total in memory if start <= ts <= stop]
    after = [total for ts, total in memory if ts <= float(end["ts"])]
    return Memory(persistent=after[-1] - base, peak=max(during + before[-1:]) - base)


def _measure_cuda(make_step, grad: bool, device: torch.device, steps: int) -> Memory:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    step = make_step()
    with torch.set_grad_enabled(grad):
        for _ in range(steps - 1):
            step()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
    torch.cuda.synchronize(device)
    return Memory(persistent=torch.cuda.memory_allocated(device) - base,
                  peak=torch.cuda.max_memory_allocated(device) - base)


SIDES = ("engine", "torch", "torch, grads kept")
_LABELS = {"engine": "engine", "torch": "torch", "torch, grads kept": "kept"}


def bench_memory(case: Case, device: str) -> dict[str, Memory]:
    """Each side of `case` measured on its own: the engine, torch (zero_grad(set_to_none=True), its default:
    the gradients do not exist between zero_grad and the backward) and torch keeping its gradients
    (set_to_none=False: like the engine's one gradient buffer, they live through the forward)."""
    dev = torch.device(device)
    model = Model.from_spec({"layers": case.layers}, case.input_shape, seed=0, device=dev)
    data = batches(case, dev, torch.float32, case.batch, 2, 0)
    makers = {
        "engine": lambda: cycle(engine_step_fn(Model.from_spec({"layers": case.layers}, case.input_shape, seed=0,
                                                               device=dev)), data),
        "torch": lambda: cycle(torch_step_fn(torch_module(model), dev)[0], data),
        "torch, grads kept": lambda: cycle(torch_step_fn(torch_module(model), dev, set_to_none=False)[0], data),
    }
    return {side: measure(make, side != "engine", dev) for side, make in makers.items()}


def table(rows: dict[str, dict[str, Memory]], parameter_bytes: dict[str, int]) -> str:
    mb = 1e6
    head = (f"{'model':<11} {'params MB':>9} | {'persistent MB':^29} | {'step peak MB':^29} | {'peak':>6}")
    labels = " ".join(f"{_LABELS[s]:>9}" for s in SIDES)
    sub = f"{'':<11} {'':>9} | {labels} | {labels} | {'eng/torch':>6}"
    lines = [head, sub, "-" * len(sub)]
    for name, sides in rows.items():
        persistent = " ".join(f"{sides[s].persistent / mb:>9.2f}" for s in SIDES)
        peak = " ".join(f"{sides[s].peak / mb:>9.2f}" for s in SIDES)
        lines.append(f"{name:<11} {parameter_bytes[name] / mb:>9.2f} | {persistent} | {peak} | "
                     f"{sides['engine'].peak / sides['torch'].peak:>8.2f}x")
    lines.append("bytes of tensors through torch's allocator (torch.profiler memory events): persistent = still "
                 "allocated after a step, peak = most at once during the step; torch's default zero_grad frees "
                 "its gradients until the backward, 'kept': torch with zero_grad(set_to_none=False)")
    return "\n".join(lines)
