"""A real sweep, timed: 27 trials of up to 27 epochs with ASHA against the full grid, with 1 and
with 2 workers.

    python bench/sweep_scaling.py                  # workers 1 and 2, SQLite and the embedded broker
    python bench/sweep_scaling.py --workers 2 --json sweep.json
    python bench/sweep_scaling.py --backend postgres     # its own PostgreSQL and Redis on loopback

The service as subprocesses on 127.0.0.1 (tests/e2e_support.Stack: `chainrule api` and N
`chainrule worker`, one torch thread each; with `--backend postgres` a throw-away PostgreSQL and
redis-server of their own), the data scikit-learn's digits (1797 rows, 64
standardized features, 10 classes), the grid lr × momentum × width of the end-to-end ASHA test
with batch_size 16, so that training rather than per-epoch bookkeeping fills the time. The wall
time runs from POST /v1/sweeps to the sweep's end, polled every 0.2 s. The machine's load
average is printed beside the figures: other work on the same cores slows every row.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from e2e_support import PostgresServer, RedisServer, Stack, wait_for  # noqa: E402

GRID = {"optimizer.lr": {"choice": [0.001, 0.01, 0.1]}, "optimizer.momentum": {"choice": [0.0, 0.5, 0.9]},
        "model.layers.0.out_features": {"choice": [8, 32, 128]}}
ASHA = {"type": "asha", "min_resource": 1, "reduction_factor": 3}


def digits_csv() -> bytes:
    X, y = load_digits(return_X_y=True)
    std = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    out = io.StringIO()
    np.savetxt(out, np.column_stack([X, y]), delimiter=",", comments="",
               header=",".join([f"px{i}" for i in range(64)] + ["digit"]), fmt=["%.5f"] * 64 + ["%d"])
    return out.getvalue().encode()


def sweep_body(dataset_id: str, workers: int, early_stopping) -> dict:
    return {"name": f"bench {workers} workers", "dataset_id": dataset_id, "method": "grid", "seed": 0,
            "max_concurrent": workers, "parameters": GRID, "early_stopping": early_stopping,
            "job": {"model": {"layers": [{"type": "linear", "out_features": 32}, {"type": "relu"},
                                         {"type": "linear", "out_features": 10}]},
                    "loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.01}, "epochs": 27,
                    "batch_size": 16, "validation_split": 0.3, "device": "cpu"}}


def run_sweep(stack: Stack, body: dict) -> dict:
    started = time.monotonic()
    r = stack.http.post("/v1/sweeps", json=body)
    r.raise_for_status()
    sweep_id = r.json()["id"]
    done = wait_for(lambda: (lambda s: s if s["status"] != "running" else None)(
        stack.http.get(f"/v1/sweeps/{sweep_id}").json()), 3600, 0.2, "the sweep to end")
    return {"workers": body["max_concurrent"], "early_stopping": body["early_stopping"] if isinstance(
                body["early_stopping"], str) else body["early_stopping"]["type"],
            "trials": done["counts"]["made"], "pruned": done["counts"]["pruned"],
            "epochs_trained": done["epochs_trained"], "epochs_full_grid": done["epochs_without_pruning"],
            "best_val_loss": round(done["best_trial"]["value"], 4), "best_params": done["best_trial"]["params"],
            "wall_s": round(time.monotonic() - started, 1), "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    rows = []
    servers = [PostgresServer().start(), RedisServer().start()] if args.backend == "postgres" else []
    try:
        for workers in (int(w) for w in args.workers.split(",")):
            urls = {"database_url": servers[0].create_database(), "broker_url": servers[1].new_url()} \
                if servers else {}
            rows += run_stack(workers, urls)
    finally:
        for server in servers:
            server.stop()
    print(f"\n{args.backend}:")
    print("| workers | early stopping | trials | pruned | epochs trained | of a full grid | best val_loss | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['early_stopping']} | {r['trials']} | {r['pruned']} | {r['epochs_trained']} | "
              f"{r['epochs_full_grid']} | {r['best_val_loss']} | {r['wall_s']} |")
    print(f"load average at the end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def run_stack(workers: int, urls: dict) -> list[dict]:
    rows = []
    stack = Stack(Path(tempfile.mkdtemp(prefix="chainrule-bench-sweep-")), **urls)
    try:
        stack.up(workers=workers)
        dataset_id = stack.upload_csv(digits_csv(), "digits")["id"]
        for early_stopping in (ASHA, "none"):
            rows.append(run_sweep(stack, sweep_body(dataset_id, workers, early_stopping)))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        stack.close()
    return rows


if __name__ == "__main__":
    main()
