"""The events of GET /v1/jobs/{id}/events as OpenAPI describes them: the stream is text/event-stream,
and each message's `event`, `id` and `data` (JSON text whose schema depends on the event) are
written out in the media type's `itemSchema` (OpenAPI 3.2's form for a stream of items, which 3.1
tools ignore) so that a client generator or a reader of /docs sees every event's fields.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter

from core.lifecycle import JobStatus

from .schemas import Finding, JobError, Progress


class StatusData(BaseModel):
    status: JobStatus
    error: JobError | None


class EpochData(BaseModel):
    """An entry of GET /v1/jobs/{id}/metrics: the epoch, its losses, and the task's metrics and
    gradient health besides."""
    model_config = ConfigDict(extra="allow")

    epoch: int
    train_loss: float | None
    val_loss: float | None


EVENT_DATA: dict[str, type[BaseModel]] = {"status": StatusData, "epoch": EpochData, "progress": Progress,
                                          "finding": Finding}


def _message(kind: str, data: type[BaseModel]) -> dict[str, Any]:
    return {"type": "object", "required": ["event", "id", "data"], "properties": {
        "event": {"const": kind},
        "id": {"type": "string", "description": "The cursor after this event: send it as Last-Event-ID to resume."},
        "retry": {"type": "integer", "description": "Milliseconds before a reconnect (the first event only)."},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"$ref": f"#/components/schemas/{data.__name__}"}}}}


def event_stream_content(example: str) -> dict[str, Any]:
    """The 200 response's `content`: text/event-stream, each message one of the events."""
    return {"text/event-stream": {
        "schema": {"type": "string", "description": "Messages `event: <kind>`, `id: <cursor>`, `data: <JSON>`; "
                                                    "comments (`: ping`) keep the connection open."},
        "itemSchema": {"oneOf": [_message(kind, model) for kind, model in EVENT_DATA.items()]},
        "example": example}}


def component_schemas() -> dict[str, Any]:
    """The event data models as components/schemas entries (the itemSchema's $refs point at them)."""
    out: dict[str, Any] = {}
    for model in EVENT_DATA.values():
        schema = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out

