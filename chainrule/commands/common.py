"""What every client command shares: the --url/--key/--json options, a Client built from them,
API errors as a one-line message and exit status 1, and output as a table or as JSON."""
from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated, Any, Iterator, Optional, Sequence

import typer
from rich.console import Console
from rich.table import Table

from ..client import ApiError, Client
from ..client_config import CONFIG_ENV, KEY_ENV, URL_ENV

Url = Annotated[Optional[str], typer.Option(
    "--url", help=f"The server. Default: ${URL_ENV}, else `chainrule login`'s, else http://127.0.0.1:8000.",
    show_default=False)]
Key = Annotated[Optional[str], typer.Option(
    "--key", help=f"An API key. Default: ${KEY_ENV}, else `chainrule login`'s (${CONFIG_ENV}).",
    show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]

console = Console()
errors = Console(stderr=True)


@contextlib.contextmanager
def connect(url: str | None, key: str | None) -> Iterator[Client]:
    """A Client; an API error ends the command with its message and exit status 1."""
    try:
        with Client(url, key) as client:
            yield client
    except ApiError as exc:
        fail(exc.message if exc.status == 0 else f"{exc.status}: {exc.message}")
    except ValueError as exc:   # an unreadable config file
        fail(str(exc))


def fail(message: str, code: int = 1) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], title: str | None = None) -> None:
    """rows as a table; columns are (field, header) pairs."""
    out = Table(title=title, show_edge=False, header_style="bold")
    for _, header in columns:
        out.add_column(header, overflow="fold")
    for row in rows:
        out.add_row(*(cell(row.get(field)) for field, _ in columns))
    console.print(out)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":   # an ISO timestamp
        return value[:19].replace("T", " ")
    return str(value)


def fields(record: dict[str, Any], names: Sequence[str]) -> None:
    """One record as `name: value` lines."""
    width = max(len(n) for n in names)
    for name in names:
        if name in record:
            console.print(f"[bold]{name:<{width}}[/]  {cell(record[name])}", highlight=False, soft_wrap=True)
