"""Two runs of bench/engine_vs_torch.py side by side: before / after a change, from their --json files.

    python bench/compare_runs.py before.json after.json

Each row: a network (layer, batch size) and the engine / torch eager ratio of each run, with
the run's lowest and highest round; memory rows: the engine's persistent and step-peak bytes
over torch's (zero_grad(set_to_none=True)) in each run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _ratio(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return f"{'-':>22}"
    lo, hi = entry["ratio_range"]
    return f"{entry['ratio']:>6.2f}x {f'[{lo:.2f}-{hi:.2f}]':>14}"


def _rows(title: str, key: str, label: str, runs: list[dict[str, Any]]) -> list[str]:
    by_run = [{str(e[label]): e for e in run.get(key, [])} for run in runs]
    names = list(dict.fromkeys(name for run in by_run for name in run))
    lines = [f"{title:<24} " + " ".join(f"{'run ' + str(i + 1):>22}" for i in range(len(runs)))]
    lines += [f"{name:<24} " + " ".join(_ratio(run.get(name)) for run in by_run) for name in names]
    return lines


def _memory(runs: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'memory: engine / torch':<24} " + " ".join(f"{'persistent  peak':>22}" for _ in runs)]
    names = list(dict.fromkeys(name for run in runs for name in run.get("memory", {})))
    for name in names:
        cells = []
        for run in runs:
            sides = run.get("memory", {}).get(name)
            if sides is None:
                cells.append(f"{'-':>22}")
                continue
            engine, torch_ = sides["engine"], sides["torch"]
            cells.append(f"{engine['persistent'] / torch_['persistent']:>13.2f}x {engine['peak'] / torch_['peak']:>6.2f}x")
        lines.append(f"{name:<24} " + " ".join(cells))
    return lines


def compare(runs: list[dict[str, Any]]) -> str:
    head = [f"run {i + 1}: {run['threads']} threads, load average {run.get('load_before')} -> "
            f"{run.get('load_after')}" for i, run in enumerate(runs)]
    return "\n".join(head + [""] + _rows("network (eng/torch)", "results", "model", runs) + [""]
                     + _memory(runs) + [""] + _rows("layer (eng/torch)", "layers", "layer", runs) + [""]
                     + _rows("MNIST MLP batch", "sweep", "batch", runs))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="--json files of bench/engine_vs_torch.py")
    print(compare([json.loads(p.read_text()) for p in ap.parse_args().runs]))
