"""`chainrule jobs show`: a job as aligned `name  value` lines, its request summarised (the model
layer by layer, loss and optimizer as calls), the latest epoch with each layer's gradient health.
`--json` prints the record as the API sends it."""
from __future__ import annotations

from typing import Any

from .common import cell
from .readable import Pair, heading, inline, print_pairs, scalar

SHOWN = {"id", "name", "status", "tags", "dataset_id", "sweep_id", "device", "worker_device", "worker_host",
         "queue", "n_parameters", "progress", "latest_metrics", "result", "error", "waiting_for", "findings",
         "landscape", "attempts", "cancel_requested", "created_at", "started_at", "finished_at", "request",
         "init_report"}
REQUEST_SECTIONS = ("model", "loss", "optimizer", "schedule")   # each on its line; the scalars share one


def show(job: dict[str, Any]) -> None:
    print_pairs(summary(job))
    latest = job.get("latest_metrics") or {}
    if latest.get("layers"):
        heading(f"layers at epoch {latest.get('epoch', '?')}")
        print_pairs(layer_pairs(latest["layers"]), indent=2)
    if job.get("request"):
        heading("request")
        print_pairs(request_pairs(job["request"]), indent=2)
    report = job.get("init_report") or {}
    if report.get("layers"):
        heading(f"at initialization (step 0, loss {cell(report.get('loss'))})")
        print_pairs(layer_pairs(report["layers"]), indent=2)


def summary(job: dict[str, Any]) -> list[Pair]:
    progress, latest = job.get("progress") or {}, job.get("latest_metrics") or {}
    ran_on = " ".join(filter(None, [job.get("worker_device"), job.get("worker_host") and f"at {job['worker_host']}"]))
    pairs = [("id", job["id"]), ("name", scalar(job.get("name"))), ("status", status(job)),
             ("tags", inline(job.get("tags") or [])), ("dataset", scalar(job.get("dataset_id")))]
    if job.get("sweep_id"):
        pairs.append(("sweep", job["sweep_id"]))
    pairs += [("device", f"{job.get('device')}" + (f" (ran on {ran_on})" if ran_on else "")),
              ("parameters", f"{job['n_parameters']:,}" if isinstance(job.get("n_parameters"), int) else "-"),
              ("progress", progress_text(progress)),
              ("latest", metrics_text(latest)),
              ("result", inline(job.get("result")) if job.get("result") else "-"),
              ("findings", findings_text(job)),
              ("landscape", scalar(job.get("landscape")) + (f" (`chainrule jobs landscape show {job['id']}`)"
                                                            if job.get("landscape") else ""))]
    pairs += [(name.removesuffix("_at"), cell(job.get(name))) for name in ("created_at", "started_at", "finished_at")]
    pairs += [(name, inline(value)) for name, value in job.items() if name not in SHOWN and value is not None]
    return pairs


def status(job: dict[str, Any]) -> str:
    text = job["status"]
    if job.get("error"):
        text += f" ({job['error'].get('code')}: {job['error'].get('message')})"
    if job.get("waiting_for"):
        text += f", waiting for {inline(job['waiting_for'])}"
    if job.get("cancel_requested") and job["status"] == "running":
        text += ", stopping (cancel requested)"
    if (job.get("attempts") or 0) > 1:
        text += f", attempt {job['attempts']}"
    return text


def progress_text(progress: dict[str, Any]) -> str:
    if not progress:
        return "-"
    steps = f", step {progress.get('step')}" + (f"/{progress['total_steps']}" if progress.get("total_steps") else "")
    fraction = progress.get("fraction")
    return (f"epoch {progress.get('epoch')}/{progress.get('epochs')}{steps}"
            + (f" ({fraction:.0%})" if isinstance(fraction, (int, float)) else ""))


def metrics_text(latest: dict[str, Any]) -> str:
    """The latest epoch's numbers (`epoch 60  train_loss 0.03362  ...`); per-layer ones have their section."""
    scalars = [f"{k} {scalar(v)}" for k, v in latest.items() if not isinstance(v, (dict, list)) and v is not None]
    return "  ".join(scalars) or "-"


def findings_text(job: dict[str, Any]) -> str:
    found = job.get("findings") or {}
    counts = ", ".join(f"{n} {severity}" for severity, n in (found.get("counts") or {}).items() if n)
    if not counts:
        return "none"
    latest = found.get("latest") or {}
    where = f" at epoch {latest['epoch']}" if latest.get("epoch") is not None else ""
    return (f"{counts}; latest{where}: {latest.get('code')}: {latest.get('message')} "
            f"(all: `chainrule jobs findings {job['id']}`)")


def layer_pairs(layers: dict[str, Any]) -> list[Pair]:
    """One line per layer: `0 linear  grad_norm 0.1638, weight_norm 13.31, ...`."""
    out = []
    for key, values in layers.items():
        values = dict(values) if isinstance(values, dict) else {"value": values}
        kind = values.pop("type", "")
        out.append((f"{key} {kind}".strip(), inline(values)))
    return out


def request_pairs(request: dict[str, Any]) -> list[Pair]:
    out: list[Pair] = []
    for i, text in enumerate(model_lines((request.get("model") or {}).get("layers") or [])):
        out.append(("model" if i == 0 else "", text))
    for name in REQUEST_SECTIONS[1:]:
        if request.get(name) is not None:
            out.append((name, inline(request[name])))
    scalars = [f"{k} {scalar(v)}" for k, v in request.items()
               if k not in REQUEST_SECTIONS and k != "dataset_id" and v is not None and not isinstance(v, (dict, list))]
    out.append(("training", ", ".join(scalars)))
    out += [(k, inline(v)) for k, v in request.items()
            if k not in REQUEST_SECTIONS and isinstance(v, (dict, list)) and v]
    return out


def model_lines(layers: list[dict[str, Any]], indent: str = "") -> list[str]:
    """A line per layer: `2  linear(out_features=3, bias=true)`; a DAG layer adds `<- its inputs`; a
    block that holds layers (repeat) is its own line, then its layers indented below it."""
    lines = []
    for index, layer in enumerate(layers):
        layer = dict(layer)
        name, inputs, inner = layer.pop("name", None), layer.pop("inputs", None), layer.pop("layers", None)
        text = f"{indent}{name or index}  {inline(layer)}" + (f"  <- {', '.join(inputs)}" if inputs else "")
        lines.append(text + (" of:" if inner else ""))
        if inner:
            lines += model_lines(inner, indent + "    ")
    return lines
