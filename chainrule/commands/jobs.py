"""`chainrule jobs submit|watch|list|show|cancel|delete|metrics|findings|weights|plot|predict|generate`."""
from __future__ import annotations

import csv
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..client import PLOT_KINDS
from . import job_view
from .common import AsJson, Key, Url, connect, console, fail, print_json, save_plot, table
from .watch import VAL_METRICS, Every, follow

app = typer.Typer(no_args_is_help=True, help="Submit, follow and use training jobs.")
COLUMNS = [("id", "id"), ("name", "name"), ("status", "status"), ("tags", "tags"), ("epoch", "epoch"),
           ("created_at", "created")]
JobId = Annotated[str, typer.Argument(help="The job's id.")]


class Status(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


def read_json(path: str, what: str) -> Any:
    """A JSON file, or standard input for `-`."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return json.loads(text)
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror or exc}")
    except ValueError as exc:
        fail(f"{what} {path} is not valid JSON: {exc}")


@app.command()
def submit(job_file: Annotated[str, typer.Argument(metavar="JOB.json", help=(
               "The job as JSON: model, loss, optimizer, epochs, ... (`-` reads standard input)."))],
           dataset: Annotated[Optional[str], typer.Option("--dataset", help="The dataset id (overrides the "
                                                           "file's dataset_id).")] = None,
           name: Annotated[Optional[str], typer.Option(help="A name for the job.")] = None,
           tag: Annotated[Optional[list[str]], typer.Option("--tag", help="A tag; repeat for more.")] = None,
           processes: Annotated[Optional[int], typer.Option("--processes", min=1, help=(
               "Train on N processes, data parallel (sets distributed.processes; batch_size is the "
               "global batch)."))] = None,
           watch: Annotated[bool, typer.Option("--watch", help="Follow it until it ends (as `jobs watch`).")]
           = False,
           every: Every = 1,
           url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Submit a training job; with --watch, follow it to the end: a line per epoch (--every K: every
    K-th), each finding, the final status (exit status as `jobs watch`)."""
    body = read_json(job_file, "job file")
    if not isinstance(body, dict):
        fail(f"job file {job_file} must hold a JSON object (model, loss, ...), not {type(body).__name__}")
    if processes is not None:
        body["distributed"] = {**(body.get("distributed") or {}), "processes": processes}
    with connect(url, key) as client:
        job = client.submit(body, dataset_id=dataset, name=name, tags=tag)
        if as_json:
            print_json(job) if not watch else sys.stdout.write(json.dumps(job) + "\n")
        else:
            console.print(f"submitted job [bold]{job['id']}[/]{' (' + job['name'] + ')' if job['name'] else ''}: "
                          f"{job['n_parameters']:,} parameters, {job['progress']['epochs']} epochs, "
                          f"{job['status']}", highlight=False)
        if watch:
            raise typer.Exit(follow(client, job["id"], as_json, every))


@app.command()
def watch(job_id: JobId, every: Every = 1, url: Url = None, key: Key = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print each event as a JSON line (every epoch; "
                                                "--every does not apply).")] = False) -> None:
    """Follow a job until it ends: a line per epoch (--every K: every K-th, and the last), each finding,
    the final status; on a terminal, a progress bar too. Exit status: 0 succeeded, 1 failed, 3 cancelled."""
    with connect(url, key) as client:
        raise typer.Exit(follow(client, job_id, as_json, every))


@app.command("list")
def list_(status: Annotated[Optional[Status], typer.Option(help="Only jobs in this status.")] = None,
          name: Annotated[Optional[str], typer.Option(help="Only jobs with this name.")] = None,
          tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Only jobs with this tag (repeat: "
                                                            "all of them).")] = None,
          sweep: Annotated[Optional[str], typer.Option(help="Only this sweep's trials.")] = None,
          limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
          offset: Annotated[int, typer.Option(min=0)] = 0,
          url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """This key's jobs, newest first."""
    with connect(url, key) as client:
        page = client.list(status=status.value if status else None, name=name, tag=tag, sweep=sweep,
                           limit=limit, offset=offset)
    if as_json:
        return print_json(page)
    rows = [{**j, "epoch": f"{j['progress']['epoch']}/{j['progress']['epochs']}"} for j in page["items"]]
    table(rows, COLUMNS, title=f"{page['total']} job(s)")


@app.command()
def show(job_id: JobId, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """A job: status, progress, latest metrics per layer, findings, and its request summarised."""
    with connect(url, key) as client:
        job = client.get(job_id)
    print_json(job) if as_json else job_view.show(job)


@app.command()
def cancel(job_id: JobId, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Cancel a queued or running job (a running one stops at its next check)."""
    with connect(url, key) as client:
        job = client.cancel(job_id)
    print_json(job) if as_json else console.print(
        f"job {job_id}: {job['status']}{' (stopping)' if job['status'] == 'running' else ''}", highlight=False)


@app.command()
def delete(job_id: JobId, url: Url = None, key: Key = None) -> None:
    """Delete a finished job with its metrics and files."""
    with connect(url, key) as client:
        client.delete(job_id)
    console.print(f"deleted job {job_id}", highlight=False)


@app.command()
def metrics(job_id: JobId, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Per-epoch losses and validation metrics (--json adds gradient health per layer)."""
    with connect(url, key) as client:
        epochs = client.metrics(job_id)
    if as_json:
        return print_json(epochs)
    shown = ["epoch", "train_loss", "val_loss"] + [m for m in VAL_METRICS if any(m in e for e in epochs)] + \
        [m for m in ("lr", "epoch_time_s") if any(m in e for e in epochs)]
    table(epochs, [(m, m) for m in shown], title=f"job {job_id}: {len(epochs)} epoch(s)")


class Severity(str, Enum):
    info = "info"
    warning = "warning"
    error = "error"


@app.command()
def findings(job_id: JobId, severity: Annotated[Optional[Severity], typer.Option(help="Only this severity.")] = None,
             code: Annotated[Optional[str], typer.Option(help="Only this rule (dead_relu, divergence, ...).")] = None,
             url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """What the diagnostics rules found, in order, with what usually fixes it (docs/diagnostics.md)."""
    with connect(url, key) as client:
        found = client.findings(job_id, severity=severity.value if severity else None, code=code)
    if as_json:
        return print_json(found)
    rows = [{**f, "layer": f"{f['layer']['key']} ({f['layer']['type']})" if f["layer"] else None} for f in found]
    table(rows, [("epoch", "epoch"), ("severity", "severity"), ("code", "rule"), ("layer", "layer"),
                 ("message", "what was measured"), ("hint", "what usually fixes it")],
          title=f"job {job_id}: {len(found)} finding(s)")


@app.command()
def weights(job_id: JobId,
            output: Annotated[Optional[Path], typer.Option("-o", "--output", help=(
                "Where to write them. Default: JOB_ID.safetensors here."))] = None,
            url: Url = None, key: Key = None) -> None:
    """Download the trained weights (.safetensors; they load into torch.nn with strict=True)."""
    with connect(url, key) as client:
        path = client.download_weights(job_id, output or Path(f"{job_id}.safetensors"))
    console.print(f"wrote {path} ({path.stat().st_size:,} bytes)", highlight=False)


PlotKind = Enum("PlotKind", {kind: kind for kind in PLOT_KINDS}, type=str)


@app.command()
def plot(job_id: JobId,
         output: Annotated[Optional[Path], typer.Option("-o", "--output", help=(
             "The PNG to write. Default: JOB_ID-KIND.png here."))] = None,
         kind: Annotated[Optional[PlotKind], typer.Option("--kind", "-k", help=(
             "What to draw. Default: the output's name when it is a kind (-o grad_norms.png), else loss."),
             show_default=False)] = None,
         width: Annotated[Optional[int], typer.Option(help="Pixels (the server's default: 800).")] = None,
         height: Annotated[Optional[int], typer.Option(help="Pixels (the server's default: 500).")] = None,
         url: Url = None, key: Key = None) -> None:
    """Save a plot of the job as PNG: loss, metric, grad_norms, update_ratios or landscape."""
    if kind is None:
        named = output.stem if output is not None else ""
        kind = PlotKind(named) if named in PlotKind.__members__ else PlotKind.loss
    path = output or Path(f"{job_id}-{kind.value}.png")
    save_plot(job_id, kind.value, path, width, height, url, key)


def read_inputs(path: Path) -> tuple[list[Any], list[str] | None]:
    """Rows and their column names, from JSON ([[...], ...] or {"inputs": [...], "columns": [...]}) or CSV.
    A CSV's header names its columns: the server matches them to the dataset's features by name and
    names a column that is not one (the target left in the file), so a cell under a header is sent as
    it is when it is not a number; without a header every cell must be a number."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r]
        if rows and not _numeric(rows[0]):
            return [[_cell(v) for v in r] for r in rows[1:]], [name.strip() for name in rows[0]]
        try:
            return [[float(v) for v in r] for r in rows], None
        except ValueError as exc:
            fail(f"{path}: every cell must be a number, or the first line must name the columns ({exc})")
    data = read_json(str(path), "inputs file")
    return (data.get("inputs", data), data.get("columns")) if isinstance(data, dict) else (data, None)


def _cell(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
        return True
    except ValueError:
        return False


@app.command()
def predict(job_id: JobId,
            inputs: Annotated[Path, typer.Option("--inputs", exists=True, dir_okay=False, help=(
                "Rows as JSON ([[...], ...] or {\"inputs\": [...]}) or CSV of feature values."))],
            url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Run the trained network on rows."""
    rows, columns = read_inputs(inputs)
    with connect(url, key) as client:
        result = client.predict(job_id, rows, columns)
    if as_json:
        return print_json(result)
    out = [{"row": i, "class": (result.get("classes") or [None] * len(rows))[i], "output": result["outputs"][i]}
           for i in range(len(result["outputs"]))]
    table(out, [("row", "row"), ("class", "class"), ("output", "output")])


@app.command()
def generate(job_id: JobId,
             prompt: Annotated[str, typer.Option("--prompt", "-p", help="The text to continue.")],
             max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", min=1)] = 200,
             temperature: Annotated[float, typer.Option(min=0, help="0: greedy (the likeliest token).")] = 0.8,
             top_k: Annotated[Optional[int], typer.Option(min=1, help="Sample among the k likeliest.")] = None,
             seed: Annotated[int, typer.Option(min=0, help="The same seed gives the same text.")] = 0,
             url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Generate text with a trained language model: prints the prompt and its continuation."""
    with connect(url, key) as client:
        result = client.generate(job_id, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_k=top_k, seed=seed)
    if as_json:
        return print_json(result)
    sys.stdout.write(result["text"] + "\n")
