"""`chainrule webhooks create|list|delete|deliveries`: tell another system when a job or sweep ends
(docs/webhooks.md: the events, the signed body and how to verify it)."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from .common import AsJson, Key, Url, connect, console, print_json, table

app = typer.Typer(no_args_is_help=True, help="Webhooks: POSTs signed with HMAC-SHA256 when jobs and sweeps end.")
COLUMNS = [("id", "id"), ("url", "url"), ("events", "events"), ("created_at", "created")]
DELIVERY_COLUMNS = [("id", "delivery"), ("event", "event"), ("status", "status"), ("attempts", "attempts"),
                    ("last", "last attempt"), ("created_at", "created")]


class Event(str, Enum):
    job_succeeded = "job.succeeded"
    job_failed = "job.failed"
    job_cancelled = "job.cancelled"
    sweep_finished = "sweep.finished"
    finding_error = "finding.error"


class Status(str, Enum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


@app.command()
def create(url: Annotated[str, typer.Argument(help="Where events are POSTed (http or https).")],
           event: Annotated[list[Event], typer.Option("--event", "-e", help=(
               "An event to receive; repeat for several. Default: job.succeeded, job.failed, job.cancelled."))]
           = [Event.job_succeeded, Event.job_failed, Event.job_cancelled],  # noqa: B006 (typer reads it)
           secret: Annotated[Optional[str], typer.Option(help=(
               "The signing key (16 to 256 printable characters). Default: the server makes one."))] = None,
           url_: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Subscribe a URL to events; prints the signing secret, which is shown only this once."""
    with connect(url_, key) as client:
        hook = client.create_webhook(url, [e.value for e in event], secret=secret)
    if as_json:
        return print_json(hook)
    console.print(f"webhook {hook['id']} -> {hook['url']} on {', '.join(hook['events'])}", highlight=False)
    console.print(f"secret: {hook['secret']}   (shown only now: verify each delivery's Chainrule-Signature "
                  "with it, docs/webhooks.md)", highlight=False, soft_wrap=True)


@app.command("list")
def list_(url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """This key's webhooks."""
    with connect(url, key) as client:
        page = client.list_webhooks()
    if as_json:
        return print_json(page)
    rows = [{**h, "events": ",".join(h["events"])} for h in page["items"]]
    table(rows, COLUMNS, title=f"{page['total']} webhook(s)")


@app.command()
def delete(webhook_id: str, url: Url = None, key: Key = None) -> None:
    """Stop sending to a webhook (its pending deliveries are dropped)."""
    with connect(url, key) as client:
        client.delete_webhook(webhook_id)
    console.print(f"deleted webhook {webhook_id}", highlight=False)


@app.command()
def deliveries(webhook_id: str,
               status: Annotated[Optional[Status], typer.Option(help="Only deliveries in this state.")] = None,
               limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
               url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """A webhook's deliveries, newest first, with how their last attempt went."""
    with connect(url, key) as client:
        page = client.webhook_deliveries(webhook_id, status=status.value if status else None, limit=limit)
    if as_json:
        return print_json(page)
    rows = []
    for d in page["items"]:
        last = d["attempt_log"][-1] if d["attempt_log"] else None
        said = "-" if last is None else (str(last["status_code"]) if last["error"] is None else
                                         f"{last['status_code'] or 'no answer'}: {last['error']}")
        rows.append({**d, "last": said})
    table(rows, DELIVERY_COLUMNS, title=f"{page['total']} deliveries")
