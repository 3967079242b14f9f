"""What every client command shares: the --url/--key/--json options, a Client built from them,
API errors as a one-line message and exit status 1, and output as a table or as JSON.

On a terminal, tables are rich's; off a terminal (a pipe, a file, a script) every record is one
line of aligned columns and nothing is wrapped, so `| grep`, `| cat` and `> file` keep whole ids."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional, Sequence

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..client import ApiError, Client
from ..client_config import CONFIG_ENV, KEY_ENV, URL_ENV, config_path, read_config

Url = Annotated[Optional[str], typer.Option(
    "--url", help=f"The server. Default: ${URL_ENV}, else `chainrule login`'s, else http://127.0.0.1:8000.",
    show_default=False)]
Key = Annotated[Optional[str], typer.Option(
    "--key", help=f"An API key. Default: ${KEY_ENV}, else `chainrule login`'s (${CONFIG_ENV}).",
    show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]

UNWRAPPED = 1_000_000    # the console width off a terminal: no line is ever folded


def _console(stderr: bool = False) -> Console:
    """rich's console; off a terminal it would wrap at 80 columns, so there it wraps nothing."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, soft_wrap=True, width=UNWRAPPED)


console = _console()
errors = _console(stderr=True)


def on_terminal() -> bool:
    return console.is_terminal


@contextlib.contextmanager
def connect(url: str | None, key: str | None) -> Iterator[Client]:
    """A Client; an API error ends the command with its message and exit status 1."""
    try:
        with Client(url, key) as client:
            yield client
    except ApiError as exc:
        if exc.status == 401:
            errors.print(f"[bold red]error:[/] 401: {exc.message}", highlight=False, soft_wrap=True)
            fail(key_hint(key), prefix="hint:")
        fail(exc.message if exc.status == 0 else f"{exc.status}: {exc.message}")
    except ValueError as exc:   # an unreadable config file
        fail(str(exc))


def fail(message: str, code: int = 1, prefix: str = "[bold red]error:[/]") -> None:
    errors.print(f"{prefix} {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def key_hint(key: str | None) -> str:
    """What to do about a 401, saying where the refused key came from (the order of client_config.resolve)."""
    fix = f"run `chainrule login` (it checks a key and saves it) or set {KEY_ENV}"
    if key:
        return "the key given by --key was refused (`chainrule keys list` on the server shows each key's prefix)"
    if os.environ.get(KEY_ENV):
        return f"the key in ${KEY_ENV} was refused: set it to a valid key, or unset it and run `chainrule login`"
    try:
        saved = read_config().get("key")
    except ValueError:
        saved = None
    if saved:
        return f"the key saved by `chainrule login` in {config_path()} was refused: {fix}"
    return f"no API key was sent: {fix} (`chainrule keys create NAME` on the server makes one)"


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], title: str | None = None) -> None:
    """rows as a table; columns are (field, header) pairs. Off a terminal: one line per row."""
    cells = [[cell(row.get(field)) for field, _ in columns] for row in rows]
    headers = [header for _, header in columns]
    if not on_terminal():
        return plain_table(cells, headers, title)
    out = Table(title=title, show_edge=False, header_style="bold")
    for header in headers:
        out.add_column(header, overflow="fold")
    for row in cells:
        out.add_row(*map(escape, row))      # a message's [brackets] are text, not markup
    console.print(out)


def plain_table(cells: Sequence[Sequence[str]], headers: Sequence[str], title: str | None = None) -> None:
    """The title, then the header and one line per row, columns aligned by two spaces; no markup,
    no box drawing, no wrapping: what `grep`, `cut -c` and `less -S` read well."""
    lines = [[" ".join(str(v).split()) for v in row] for row in [headers, *cells]]   # one line each
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    if title:
        sys.stdout.write(title + "\n")
    for line in lines:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() + "\n")
    sys.stdout.flush()


def cell(value: Any) -> str:
    if value is None or value == [] or value == {} or value == "":    # an empty cell would shift the columns
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):      # never a Python repr
        return ", ".join(f"{k} {cell(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":   # an ISO timestamp
        return value[:19].replace("T", " ")
    return str(value)


def fields(record: dict[str, Any], names: Sequence[str]) -> None:
    """One record as `name: value` lines."""
    width = max(len(n) for n in names)
    for name in names:
        if name in record:
            console.print(f"[bold]{name:<{width}}[/]  {escape(cell(record[name]))}", highlight=False,
                          soft_wrap=True)


Settings = Annotated[Optional[list[str]], typer.Option("--set", metavar="NAME=VALUE", help=(
    "A field of the request body, as the API's docs (/docs) name it; VALUE is JSON (41, 0.5, true, "
    "[1, 2]) or else text. Repeat for more."), show_default=False)]


def named_values(pairs: Sequence[str] | None) -> dict[str, Any]:
    """`--set points=41 --set seed=3` as {"points": 41, "seed": 3}; the API checks names and values."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            fail(f"--set {pair!r}: expected NAME=VALUE, e.g. --set seed=3")
        try:
            out[name.strip()] = json.loads(text)
        except ValueError:
            out[name.strip()] = text
    return out


def save_plot(job_id: str, kind: str, path: Path, width: int | None, height: int | None, url: str | None,
              key: str | None) -> None:
    """GET a job's plot `kind` as PNG into `path` (jobs plot, jobs landscape plot)."""
    with connect(url, key) as client:
        png = client.plot(job_id, kind, width=width, height=height)
    try:
        path.write_bytes(png)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    console.print(f"wrote {path} ({kind}, {len(png):,} bytes)", highlight=False, soft_wrap=True)
