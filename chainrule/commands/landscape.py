"""`chainrule jobs landscape request|watch|show|plot|cancel`: a succeeded job's loss landscape and
Hessian, computed on a worker (POST/GET /v1/jobs/{id}/landscape, GET .../plots/landscape.png).

The result is printed field by field as the API sends it (`hessian.min_eigenvalue  ...`, long
series as count and range), so a field the API gains shows up without a change here."""
from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..client import FINAL, Client
from .common import (AsJson, Key, Settings, Url, connect, console, errors, named_values, print_json,
                     save_plot)
from .readable import flatten, heading, inline, print_pairs
from .watch import EXIT

app = typer.Typer(no_args_is_help=True, help=(
    "A succeeded job's loss landscape: the loss from its initial to its final weights, a surface around "
    "the final weights, the Hessian's extreme eigenvalues there with their error bounds (a minimum, a saddle, "
    "a maximum, or inconclusive) and its spectral density."))
JobId = Annotated[str, typer.Argument(help="The job's id (a succeeded job).")]
POLL_S = 1.0
STEP = 0.1          # off a terminal, a progress line each time another tenth is done


@app.command()
def request(job_id: JobId, settings: Settings = None,
            watch: Annotated[bool, typer.Option("--watch", help="Follow it until it ends (as `watch`).")] = False,
            url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Queue the landscape on a worker (`--set samples=256 --set grid=31`: the request's fields; the
    server's defaults otherwise). A finished landscape of the job is replaced."""
    body = named_values(settings)
    with connect(url, key) as client:
        row = client.request_landscape(job_id, **body)
        if as_json and not watch:
            return print_json(row)
        if not as_json:
            console.print(f"landscape of job {job_id}: {row['status']}  ({inline(row.get('options') or {})})",
                          highlight=False, markup=False, soft_wrap=True)
        if watch:
            raise typer.Exit(follow(client, job_id, as_json))


@app.command("watch")
def watch_(job_id: JobId, url: Url = None, key: Key = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print the landscape as a JSON line at each "
                                                 "change.")] = False) -> None:
    """Follow the landscape until it ends: a line per status and per tenth done, then its result.
    Exit status: 0 succeeded, 1 failed, 3 cancelled."""
    with connect(url, key) as client:
        raise typer.Exit(follow(client, job_id, as_json))


@app.command()
def show(job_id: JobId, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """The landscape's status, options and result (every field; long series as count and range)."""
    with connect(url, key) as client:
        row = client.landscape(job_id)
    print_json(row) if as_json else describe(row)


class Figure(str, Enum):
    landscape = "landscape"
    spectral_density = "spectral_density"


@app.command()
def plot(job_id: JobId,
         kind: Annotated[Figure, typer.Option("--kind", "-k", help=(
             "landscape: the line and the surface; spectral_density: the Hessian's eigenvalue density, its "
             "mass below zero shaded."))] = Figure.landscape,
         output: Annotated[Optional[Path], typer.Option("-o", "--output", help=(
             "The PNG to write. Default: JOB_ID-KIND.png here."))] = None,
         width: Annotated[Optional[int], typer.Option(help="Pixels (the server's default: 800).")] = None,
         height: Annotated[Optional[int], typer.Option(help="Pixels (the server's default: 500).")] = None,
         url: Url = None, key: Key = None) -> None:
    """Save the landscape's plot (the line and the surface), or its spectral density, as PNG."""
    path = output or Path(f"{job_id}-{kind.value}.png")
    save_plot(job_id, kind.value, path, width, height, url, key)


@app.command()
def cancel(job_id: JobId, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Cancel a queued or running landscape (a running one stops at its next heartbeat)."""
    with connect(url, key) as client:
        row = client.cancel_landscape(job_id)
    if as_json:
        return print_json(row)
    stopping = " (stopping)" if row.get("cancel_requested") and row["status"] == "running" else ""
    console.print(f"landscape of job {job_id}: {row['status']}{stopping}", highlight=False)


def follow(client: Client, job_id: str, as_json: bool) -> int:
    """Poll until the landscape is final (it has no event stream); the exit status by EXIT."""
    row: dict[str, Any] = {}
    shown: tuple[str, int] | None = None
    try:
        while True:
            row = client.landscape(job_id)
            now = (row["status"], int(row["fraction"] / STEP))
            if now != shown:
                shown = now
                if as_json:
                    print(json.dumps(row), flush=True)
                else:
                    console.print(f"landscape of job {job_id}: {row['status']} {row['fraction']:.0%}",
                                  highlight=False)
            if row["status"] in FINAL:
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        errors.print(f"stopped watching; the landscape goes on (`chainrule jobs landscape cancel {job_id}` "
                     "stops it)", highlight=False)
        return 130
    if not as_json:
        describe(row, header=False)
    return EXIT.get(row["status"], 1)


def describe(row: dict[str, Any], header: bool = True) -> None:
    """The row's own fields, then its result flattened to `section.field  value` lines."""
    if header:
        pairs = [(name, inline(value))
                 for name, value in row.items() if name not in ("result", "error")]
        print_pairs(pairs)
    if row.get("error"):
        errors.print(f"landscape failed ({row['error'].get('code')}): {row['error'].get('message')}",
                     highlight=False, markup=False, soft_wrap=True)
    if row.get("result"):
        heading("result")
        print_pairs(flatten(row["result"]), indent=2)
