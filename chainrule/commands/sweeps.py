"""`chainrule sweeps submit|watch|list|show|cancel|delete`: hyperparameter searches, whose trials are
jobs (`chainrule jobs list --sweep ID`)."""
from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ..client import SWEEP_FINAL, Client
from .common import (
    AsJson,
    Key,
    Url,
    cell,
    connect,
    console,
    errors,
    fail,
    fields,
    on_terminal,
    plain_table,
    print_json,
    table,
)
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
PROGRESS_EVERY_S = 30.0    # off a terminal, a progress line at least this often while trials train


def trial_cells(sweep: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and one row per trial: its parameters, status (pruned said as such), epochs and best
    value; the best trial is marked `N *`."""
    best = (sweep.get("best_trial") or {}).get("number")
    paths = list(sweep["request"]["parameters"]) if "request" in sweep else []
    rows = [[f"{trial['number']}{' *' if trial['number'] == best else ''}",
             *(cell(trial["params"].get(p)) for p in paths), trial_status(trial), str(trial["epochs"]),
             cell(trial["value"])] for trial in sweep.get("trials", [])]
    return ["#", *paths, "status", "epochs", sweep["metric"]], rows


def trials_table(sweep: dict[str, Any]) -> Table:
    headers, rows = trial_cells(sweep)
    out = Table(show_edge=False, header_style="bold")
    for header in headers:
        out.add_column(header, overflow="fold")
    for row in rows:
        out.add_row(*map(escape, row))
    return out


def trial_status(trial: dict[str, Any]) -> str:
    return "pruned" if trial["pruned"] else trial["status"]


def trial_line(sweep: dict[str, Any], trial: dict[str, Any]) -> str:
    """`trial 3 succeeded after 12 epochs: val_loss 0.2134 (optimizer.lr 0.03, batch_size 256)`."""
    params = ", ".join(f"{p} {cell(v)}" for p, v in trial["params"].items())
    text = f"trial {trial['number']} {trial_status(trial)}"
    if trial["status"] not in ("queued", "running"):
        text += f" after {trial['epochs']} epoch(s)"
        if trial["value"] is not None:
            text += f": {sweep['metric']} {cell(trial['value'])}"
        if trial.get("error") and not trial["pruned"]:
            text += f" ({trial['error'].get('code')}: {trial['error'].get('message')})"
    return f"{text}  ({params})" if params else text


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
        elif not on_terminal():
            sweep = _lines(client, sweep_id)
        else:
            with Live(console=console, auto_refresh=False) as live:
                for sweep in changes(client, sweep_id):
                    live.update(Group(headline(sweep), trials_table(sweep)), refresh=True)
    except KeyboardInterrupt:
        errors.print(f"stopped watching; sweep {sweep_id} goes on (`chainrule sweeps cancel {sweep_id}` stops it)",
                     highlight=False)
        return 130
    return EXIT.get(sweep.get("status"), 1)


def _lines(client: Client, sweep_id: str) -> dict[str, Any]:
    """Off a terminal: a line whenever a trial changes status, a progress line at least every
    PROGRESS_EVERY_S while epochs are trained, then the sweep and its trials as a table."""
    seen: dict[int, str] = {}
    sweep: dict[str, Any] = {}
    last_line, last_epochs = time.monotonic(), 0
    for sweep in changes(client, sweep_id):
        for trial in sweep.get("trials", []):
            if seen.get(trial["number"]) != trial_status(trial):
                seen[trial["number"]] = trial_status(trial)
                console.print(trial_line(sweep, trial), highlight=False, markup=False)
                last_line = time.monotonic()
        if sweep["epochs_trained"] != last_epochs and time.monotonic() - last_line >= PROGRESS_EVERY_S:
            console.print(headline(sweep), highlight=False)
            last_line = time.monotonic()
        last_epochs = sweep["epochs_trained"]
    console.print(headline(sweep), highlight=False)
    headers, rows = trial_cells(sweep)
    plain_table(rows, headers)
    return sweep


@app.command()
def submit(sweep_file: Annotated[str, typer.Argument(metavar="SWEEP.json", help=(
               "The sweep as JSON: job, parameters, method, metric, ... (`-` reads standard input)."))],
           dataset: Annotated[str | None, typer.Option("--dataset", help="The dataset id (overrides the "
                                                           "file's dataset_id).")] = None,
           name: Annotated[str | None, typer.Option(help="A name (overrides the file's).")] = None,
           watch: Annotated[bool, typer.Option("--watch", help="Follow it until it ends (as `sweeps watch`).")] = False,
           url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Submit a hyperparameter sweep; with --watch, follow it until it ends (as `sweeps watch`)."""
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
    """Follow a sweep until it ends: on a terminal a live table of its trials; off a terminal a line
    per trial started, finished or pruned, a progress line at least every 30 s while trials train, and
    the trials' table at the end. Exit status: 0 succeeded, 1 failed, 3 cancelled."""
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
    if on_terminal():
        return console.print(trials_table(sweep))
    headers, rows = trial_cells(sweep)
    plain_table(rows, headers)


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
