"""`chainrule jobs gradcheck`: the engine's hand-written backward on a network, layer by layer, against
centred finite differences in float64 (POST /v1/gradcheck), before or after submitting it."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import AsJson, Key, Settings, Url, cell, connect, fail, named_values, print_json, table
from .jobs import read_json
from .readable import flatten, inline, print_pairs

CHECKED = ("model", "loss")     # what a job file or a job's request contributes to the check
Source = Annotated[str, typer.Argument(metavar="JOB.json|JOB_ID", help=(
    "A job file (`-`: standard input) or a submitted job's id: its model and loss are checked."))]


def gradcheck(source: Source,
              dataset: Annotated[Optional[str], typer.Option("--dataset", help=(
                  "Check on seeded rows of this dataset. Default: the file's dataset_id or the job's."))] = None,
              input_shape: Annotated[Optional[str], typer.Option("--input-shape", metavar="DIMS", help=(
                  "Check on random inputs of one sample's shape instead: 4, or 1,28,28."))] = None,
              settings: Settings = None,
              url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Check the network's backward against finite differences, layer by layer (`--set batch_size=8
    --set tolerance=1e-7`: the request's other fields). Exit status 0 when every layer passes, 1 if not."""
    with connect(url, key) as client:
        job = read_source(client, source)
        body = {**{k: job[k] for k in CHECKED if k in job}, **named_values(settings)}
        if input_shape:
            body["input_shape"] = dims(input_shape)
        elif dataset or job.get("dataset_id"):
            body["dataset_id"] = dataset or job["dataset_id"]
        elif "input_shape" not in body and "dataset_id" not in body:
            fail(f"{source} names no dataset: pass --dataset ID (its rows) or --input-shape DIMS (random inputs)")
        report = client.gradcheck(**body)
    if as_json:
        print_json(report)
    else:
        describe(report)
    raise typer.Exit(0 if report.get("passed") else 1)


def dims(text: str) -> list[int]:
    try:
        return [int(d) for d in text.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        fail(f"--input-shape {text!r}: expected whole numbers separated by commas, e.g. 4 or 1,28,28")


def read_source(client, source: str) -> dict[str, Any]:
    """A job file's body, or a submitted job's request (with its dataset_id)."""
    if source == "-" or Path(source).exists() or Path(source).suffix or "/" in source:   # a path, not an id
        body = read_json(source, "job file")
        return body if isinstance(body, dict) else {}
    return client.get(source)["request"]


def describe(report: dict[str, Any]) -> None:
    """The verdict and settings, then a line per layer (and the input): status, worst relative error,
    kinks, and where the worst one sits."""
    layers = [dict(layer) for layer in report.get("layers") or []]
    if report.get("input"):
        layers.append({"key": "input", "type": "-", **{k: v for k, v in report["input"].items() if k != "name"}})
    rows = [{**layer, "worst": worst(layer.get("worst"))} for layer in layers]
    columns = [(name, name) for name in scalar_names(layers)] + [("worst", "worst (tensor index: analytic vs numeric)")]
    print_pairs((name, value) for name, value in flatten(report) if name.split(".")[0] not in ("layers", "input"))
    table(rows, columns, title=f"{len(layers)} checked")


def scalar_names(rows: list[dict[str, Any]]) -> list[str]:
    """The fields that every row can show in a column (numbers, strings), in their first order."""
    names: dict[str, None] = {}
    for row in rows:
        names.update({k: None for k, v in row.items() if not isinstance(v, (dict, list)) and k != "worst"})
    return list(names)


def worst(coordinate: dict[str, Any] | None) -> str:
    if not coordinate:
        return "-"
    where = " ".join(filter(None, [coordinate.get("tensor"), inline(coordinate.get("index") or [])]))
    rest = {k: v for k, v in coordinate.items() if k not in ("tensor", "index")}
    return f"{where}: " + ", ".join(f"{k} {cell(v)}" for k, v in rest.items())
