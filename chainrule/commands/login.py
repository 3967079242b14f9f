"""`chainrule login`: check a server URL and key, and keep them for later commands."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..client_config import DEFAULT_URL, write_config
from .common import connect, console


def login(url: Annotated[str, typer.Option(help="The server.")] = DEFAULT_URL,
          key: Annotated[Optional[str], typer.Option(help="An API key (prompted for, hidden, when absent).",
                                                     show_default=False)] = None) -> None:
    """Save the server URL and API key (checked first) to the client config file (mode 600)."""
    key = key or typer.prompt("API key", hide_input=True)
    with connect(url, key) as client:
        client.list_datasets(limit=1)     # a wrong URL or key fails here, not on the next command
    path = write_config(url.rstrip("/"), key.strip())
    console.print(f"logged in to {url}; saved to {path}", highlight=False)
