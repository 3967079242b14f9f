"""Following a job: a line per epoch (or every K-th, and always the last), each finding, and an
exit status that says how the job ended. On a terminal a live progress bar sits below the lines;
off a terminal (a pipe, a file) there is no bar, and each status change is a line of its own."""
from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from ..client import Client
from .common import console, errors, on_terminal

EXIT = {"succeeded": 0, "failed": 1, "cancelled": 3}    # the exit status of watch, by final status
VAL_METRICS = ("val_accuracy", "val_r2", "val_mae")     # the first one an epoch has is shown
Every = Annotated[int, typer.Option("--every", min=1, help=(
    "Print every K-th epoch's line (the last is always printed). Default: every epoch."))]


def summary(epoch: dict[str, Any]) -> str:
    """`train_loss 0.412  val_loss 0.438  val_accuracy 0.873` from one epoch's metrics."""
    names = ["train_loss", "val_loss"] + [next((m for m in VAL_METRICS if epoch.get(m) is not None), "")]
    return "  ".join(f"{n} {epoch[n]:.4g}" for n in names if n and isinstance(epoch.get(n), (int, float)))


def follow(client: Client, job_id: str, as_json: bool = False, every: int = 1) -> int:
    """Watch until the job is final; the exit status by EXIT. Ctrl-C stops watching, not the job."""
    try:
        if as_json:
            return _json_lines(client, job_id)
        return _live(client, job_id, every) if on_terminal() else _lines(client, job_id, every)
    except KeyboardInterrupt:
        errors.print(f"stopped watching; job {job_id} goes on (`chainrule jobs cancel {job_id}` stops it)",
                     highlight=False)
        return 130


def _json_lines(client: Client, job_id: str) -> int:
    status = None
    for event in client.watch(job_id):
        sys.stdout.write(json.dumps({"event": event.kind, "id": event.id, "data": event.data}) + "\n")
        sys.stdout.flush()
        status = event.data.get("status") if event.kind == "status" else status
    return EXIT.get(status, 1)


def epoch_line(data: dict[str, Any], epochs: int) -> str:
    return f"epoch {data['epoch']:>{len(str(epochs))}}/{epochs}  {summary(data)}"


def shown(epoch: int, epochs: int, every: int) -> bool:
    return epoch % every == 0 or epoch == epochs


def _lines(client: Client, job_id: str, every: int) -> int:
    """Off a terminal: plain lines only, each written whole as it happens."""
    job = client.get(job_id)
    epochs, status, final = int(job["progress"]["epochs"]) or 1, job["status"], {}
    unshown = None      # the latest epoch when --every skipped it: printed at the end (early stopping)
    for event in client.watch(job_id):
        data = event.data
        if event.kind == "status":
            final = data
            if data["status"] != status and data["status"] not in EXIT:    # the final one is _report's
                console.print(f"job {job_id}: {data['status']}", highlight=False)
            status = data["status"]
        elif event.kind == "epoch":
            unshown = None if shown(data["epoch"], epochs, every) else data
            if unshown is None:
                console.print(epoch_line(data, epochs), highlight=False)
        elif event.kind == "finding":
            console.print(f"finding: {data.get('message', data)}", highlight=False, markup=False)
    if unshown is not None:
        console.print(epoch_line(unshown, epochs), highlight=False)
    return _report(client, job_id, final.get("status", status), final.get("error"))


def _live(client: Client, job_id: str, every: int) -> int:
    job = client.get(job_id)
    epochs = int(job["progress"]["epochs"]) or 1
    final: dict[str, Any] = {}
    unshown = None
    columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), TaskProgressColumn(),
               TextColumn("{task.fields[metrics]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        status, where = job["status"], f"epoch 0/{epochs}"
        task = bar.add_task(f"{status:>9}  {where}", total=1.0, metrics="")
        for event in client.watch(job_id):
            data = event.data
            if event.kind == "status":
                status, final = data["status"], data
            elif event.kind == "progress":
                where = f"epoch {data['epoch']}/{data['epochs']}"
                bar.update(task, completed=data["fraction"])
            elif event.kind == "epoch":
                bar.update(task, metrics=summary(data))
                unshown = None if shown(data["epoch"], epochs, every) else data
                if unshown is None:
                    bar.console.print(epoch_line(data, epochs), highlight=False, soft_wrap=True)
            elif event.kind == "finding":
                bar.console.print(f"[yellow]finding:[/] {escape(str(data.get('message', data)))}", highlight=False,
                                  soft_wrap=True)
            bar.update(task, description=f"{status:>9}  {where}")
        if unshown is not None:
            bar.console.print(epoch_line(unshown, epochs), highlight=False, soft_wrap=True)
    return _report(client, job_id, final.get("status", status), final.get("error"))


def _report(client: Client, job_id: str, status: str, error: dict[str, Any] | None) -> int:
    if status == "succeeded":
        job = client.get(job_id)
        console.print(f"[bold green]job {job_id} succeeded[/]  {summary(job.get('latest_metrics') or {})}",
                      highlight=False, soft_wrap=True)      # one line however long: scripts read it
        console.print(f"weights: chainrule jobs weights {job_id} -o {job_id[:8]}.safetensors", highlight=False,
                      soft_wrap=True)   # a command to copy: never split
    elif status == "failed":
        errors.print(f"[bold red]job {job_id} failed[/] ({(error or {}).get('code', 'error')}): "
                     f"{escape((error or {}).get('message', ''))}", highlight=False, soft_wrap=True)
    else:
        errors.print(f"[bold yellow]job {job_id} was {status}[/]", highlight=False)
    return EXIT.get(status, 1)
