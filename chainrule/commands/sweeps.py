"""`chainrule sweeps submit|watch|list|show|cancel|delete`: hyperparameter searches, whose trials are
jobs (`chainrule jobs list --sweep ID`)."""
from __future__ import annotations

import json
import time
from typing import Annotated, Any, Optional

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from ..client import SWEEP_FINAL, Client
from .common import AsJson, Key, Url, cell, connect, console, errors, fail, fields, print_json, table
from .jobs import read_json
from .watch import EXIT

app = typer.Typer(no_args_is_help=True, help="Hyperparameter sweeps: every trial is a job.")
SweepId = Annotated[str, typer.Argument(help="The sweep's id.")]
COLUMNS = [("id", "id"), ("name", "name"), ("status", "status"), ("method", "method"), ("trials", "trials"),
           ("best", "best"), ("created_at", "created")]
DETAILS = ["id", "name", "status", "dataset_id", "method", "metric", "goal", "early_stopping", "max_trials",
           "max_concurrent", "counts", "epochs_trained", "epochs_without_pruning", "best_trial", "error",
           "created_at", "finished_at"]
POLL_S = 1.0


def trials_table(sweep: dict[str, Any]) -> Table:
    """One row per trial: its parameters, status (pruned said as such), epochs and best value; the
    best trial is marked."""
    best = (sweep.get("best_trial") or {}).get("number")
    paths = list(sweep["request"]["parameters"]) if "request" in sweep else []
    out = Table(show_edge=False, header_style="bold")
    for header in ["#", *paths, "status", "epochs", sweep["metric"]]:
        out.add_column(header, overflow="fold")
    for trial in sweep.get("trials", []):
        status = "pruned" if trial["pruned"] else trial["status"]
        out.add_row(f"{trial['number']}{' *' if trial['number'] == best else ''}",
                    *(cell(trial["params"].get(p)) for p in paths), status, str(trial["epochs"]),
                    cell(trial["value"]))
    return out


def headline(sweep: dict[str, Any]) -> str:
    counts = sweep["counts"]
    done = ", ".join(f"{n} {k}" for k, n in counts.items() if n and k not in ("made", "remaining"))
    best = sweep.get("best_trial")
    best_text = f"; best: trial {best['number']} {sweep['metric']} {best['value']:.4g}" if best else ""
    return (f"sweep {sweep['id']} ({sweep['name']}): [bold]{sweep['status']}[/], {counts['made']}/"
            f"{sweep['max_trials']} trials made ({done or 'none ended'}), {sweep['epochs_trained']} epochs "
            f"trained of {sweep['epochs_without_pruning']} without pruning{best_text}")


def changes(client: Client, sweep_id: str):
    """The sweep each time it changes, until it is final (its trials are jobs; a sweep has no event
    stream of its own, so this polls)."""
    last = None
    while True:
        sweep = client.get_sweep(sweep_id)
        if sweep != last:
            last = sweep
            yield sweep
        if sweep["status"] in SWEEP_FINAL:
            return
        time.sleep(POLL_S)


def follow(client: Client, sweep_id: str, as_json: bool) -> int:
    """Until the sweep is final: a live table of its trials (or, with as_json, the sweep as a JSON
    line at each change); the exit status as `jobs watch` (0 succeeded, 1 failed, 3 cancelled)."""
    sweep: dict[str, Any] = {}
    try:
        if as_json:
            for sweep in changes(client, sweep_id):
                print(json.dumps(sweep), flush=True)
        else:
            with Live(console=console, auto_refresh=False) as live:
                for sweep in changes(client, sweep_id):
                    live.update(Group(headline(sweep), trials_table(sweep)), refresh=True)
    except KeyboardInterrupt:
        errors.print(f"stopped watching; sweep {sweep_id} goes on (`chainrule sweeps cancel {sweep_id}` stops it)",
                     highlight=False)
        return 130
    return EXIT.get(sweep.get("status"), 1)


@app.command()
def submit(sweep_file: Annotated[str, typer.Argument(metavar="SWEEP.json", help=(
               "The sweep as JSON: job, parameters, method, metric, ... (`-` reads standard input)."))],
           dataset: Annotated[Optional[str], typer.Option("--dataset", help="The dataset id (overrides the "
                                                           "file's dataset_id).")] = None,
           name: Annotated[Optional[str], typer.Option(help="A name (overrides the file's).")] = None,
           watch: Annotated[bool, typer.Option("--watch", help="Follow it live until it ends.")] = False,
           url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Submit a hyperparameter sweep; with --watch, a live table of its trials until it ends."""
    body = read_json(sweep_file, "sweep file")
    if not isinstance(body, dict):
        fail(f"sweep file {sweep_file} must hold a JSON object (job, parameters, ...), not {type(body).__name__}")
    with connect(url, key) as client:
        sweep = client.submit_sweep(body, dataset_id=dataset, name=name)
        if as_json and not watch:
            return print_json(sweep)
        if not as_json:
            console.print(f"submitted sweep [bold]{sweep['id']}[/] ({sweep['name']}): {sweep['method']} over "
                          f"{len(sweep['request']['parameters'])} parameter(s), up to {sweep['max_trials']} "
                          f"trials, {sweep['max_concurrent']} at a time", highlight=False)
        if watch:
            raise typer.Exit(follow(client, sweep["id"], as_json))


@app.command()
def watch(sweep_id: SweepId, url: Url = None, key: Key = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print the sweep as a JSON line at each change.")]
          = False) -> None:
    """Follow a sweep live until it ends. Exit status: 0 succeeded, 1 failed, 3 cancelled."""
    with connect(url, key) as client:
        raise typer.Exit(follow(client, sweep_id, as_json))


@app.command("list")
def list_(limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
          offset: Annotated[int, typer.Option(min=0)] = 0,
          url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """This key's sweeps, newest first."""
    with connect(url, key) as client:
        page = client.list_sweeps(limit=limit, offset=offset)
    if as_json:
        return print_json(page)
    rows = [{**s, "trials": f"{s['counts']['made']}/{s['max_trials']}",
             "best": (s.get("best_trial") or {}).get("value")} for s in page["items"]]
    table(rows, COLUMNS, title=f"{page['total']} sweep(s)")


@app.command()
def show(sweep_id: SweepId, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """A sweep: status, counts, the best trial, and every trial."""
    with connect(url, key) as client:
        sweep = client.get_sweep(sweep_id)
    if as_json:
        return print_json(sweep)
    fields(sweep, DETAILS)
    console.print(trials_table(sweep))


@app.command()
def cancel(sweep_id: SweepId, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Cancel a sweep: no new trials; its queued and running trials stop."""
    with connect(url, key) as client:
        sweep = client.cancel_sweep(sweep_id)
    print_json(sweep) if as_json else console.print(f"sweep {sweep_id}: {sweep['status']}", highlight=False)


@app.command()
def delete(sweep_id: SweepId, url: Url = None, key: Key = None) -> None:
    """Delete a finished sweep with its trials' jobs and files."""
    with connect(url, key) as client:
        client.delete_sweep(sweep_id)
    console.print(f"deleted sweep {sweep_id}", highlight=False)
