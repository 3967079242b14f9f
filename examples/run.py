"""Runs one example sweep against a chainrule service and prints its trials as a table.

    python examples/make_datasets.py                      # once: examples/data/digits.csv
    export CHAINRULE_URL=http://127.0.0.1:8000 CHAINRULE_KEY=...   # a key from `chainrule keys create`
    python examples/run.py examples/initialization.json [--dataset ID]

Without --dataset it uploads examples/data/digits.csv first. Plain HTTP (httpx); the chainrule
CLI's `sweeps submit --watch` does the same with a live table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent


def label(value) -> str:
    """A parameter's value for the table: a whole network or optimizer shortened to its gist."""
    if isinstance(value, dict) and "layers" in value:
        types = [layer["type"] for layer in value["layers"]]
        return f"{types.count('linear')} linear" + (" + batchnorm" if "batchnorm" in types else "")
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def gradient_ratio(http: httpx.Client, job_id: str) -> str:
    """First over last linear layer's gradient norm at epoch 1: far below 1 is a vanishing gradient."""
    epochs = http.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
    if not epochs:
        return "-"
    linear = [h["grad_norm"] for h in epochs[0]["layers"].values() if h.get("type") == "linear"]
    return f"{linear[0] / linear[-1]:.2g}" if linear and linear[-1] else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--dataset", help="a dataset id (default: upload examples/data/digits.csv)")
    parser.add_argument("--url", default=os.environ.get("CHAINRULE_URL", "http://127.0.0.1:8000"))
    args = parser.parse_args()
    http = httpx.Client(base_url=args.url, timeout=60,
                        headers={"Authorization": f"Bearer {os.environ['CHAINRULE_KEY']}"})
    dataset = args.dataset
    if dataset is None:
        with open(HERE / "data" / "digits.csv", "rb") as f:
            dataset = http.post("/v1/datasets", files={"file": ("digits.csv", f)}, data={"name": "digits"}
                                ).raise_for_status().json()["id"]
    body = {**json.loads(args.sweep.read_text()), "dataset_id": dataset}
    started = time.monotonic()
    r = http.post("/v1/sweeps", json=body)
    if r.status_code != 202:
        sys.exit(f"{r.status_code}: {r.text}")
    sweep = r.json()
    while sweep["status"] == "running":
        time.sleep(0.5)
        sweep = http.get(f"/v1/sweeps/{sweep['id']}").json()
    wall = time.monotonic() - started
    print(f"{sweep['name']}: {sweep['status']} in {wall:.1f} s; {sweep['counts']['made']} trials, "
          f"{sweep['counts']['pruned']} pruned, {sweep['epochs_trained']} epochs trained of "
          f"{sweep['epochs_without_pruning']}")
    paths = list(body["parameters"])
    print(" | ".join(["trial", *paths, "status", "epochs", f"best {sweep['metric']}", "val_accuracy",
                      "grad first/last"]))
    for t in sweep["trials"]:
        epochs = http.get(f"/v1/jobs/{t['job_id']}/metrics").json()["epochs"]
        accuracy = max((m["val_accuracy"] for m in epochs), default=None)
        status = "pruned" if t["pruned"] else t["status"]
        print(" | ".join([str(t["number"]), *(label(t["params"][p]) for p in paths), status, str(t["epochs"]),
                          f"{t['value']:.4f}" if t["value"] is not None else "-",
                          f"{accuracy:.3f}" if accuracy is not None else "-", gradient_ratio(http, t["job_id"])]))
    best = sweep["best_trial"]
    if best:
        print(f"best: trial {best['number']} {dict((p, label(v)) for p, v in best['params'].items())} "
              f"{sweep['metric']} {best['value']:.4f} at epoch {best['best_epoch']}")


if __name__ == "__main__":
    main()
