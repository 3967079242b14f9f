"""Webhook requests and responses: a subscription (the secret shown only when it is made) and its
delivery log."""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.tables import Webhook, WebhookDelivery
from core.webhooks import WebhookEvent

from .schemas import UtcDatetime

SECRET_PATTERN = r"^[\x21-\x7e]+$"    # printable ASCII without spaces: it travels in no header, but is typed


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://example.com/chainrule-hook", "events": ["job.succeeded", "job.failed"]}]})

    url: str = Field(min_length=1, max_length=2048, description="Where events are POSTed: an http(s) URL whose "
                     "host resolves to public addresses only.")
    events: list[WebhookEvent] = Field(min_length=1, max_length=len(WebhookEvent),
                                       description="The events to receive.")
    secret: str | None = Field(None, min_length=16, max_length=256, pattern=SECRET_PATTERN,
                               description="The HMAC-SHA256 key that signs each delivery (16 to 256 printable "
                                           "characters). Absent: one is generated and returned once.")

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[WebhookEvent]) -> list[WebhookEvent]:
        return list(dict.fromkeys(events))


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[WebhookEvent]
    created_at: UtcDatetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="The signing secret. Shown only in this answer: keep it.")


class WebhookList(BaseModel):
    items: list[WebhookPublic]
    total: int


class DeliveryAttempt(BaseModel):
    attempt: int
    at: UtcDatetime
    status_code: int | None = Field(description="The receiver's HTTP status; null when no answer came.")
    error: str | None = Field(description="Why the attempt failed; null when it succeeded (a 2xx).")
    ms: int = Field(description="Milliseconds the attempt took.")


class DeliveryPublic(BaseModel):
    id: str = Field(description="The delivery id, sent as the Chainrule-Delivery header on every attempt.")
    event: WebhookEvent
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: UtcDatetime | None = Field(description="When a pending delivery is tried next.")
    created_at: UtcDatetime
    finished_at: UtcDatetime | None
    body: dict[str, Any] = Field(description="The JSON body POSTed (the same on every attempt).")
    attempt_log: list[DeliveryAttempt]


class DeliveryList(BaseModel):
    items: list[DeliveryPublic]
    total: int
    limit: int
    offset: int


def webhook_public(hook: Webhook) -> WebhookPublic:
    return WebhookPublic(id=hook.id, url=hook.url, events=hook.events, created_at=hook.created_at)


def delivery_public(row: WebhookDelivery) -> DeliveryPublic:
    return DeliveryPublic(id=row.id, event=row.event, status=row.status, attempts=row.attempts,
                          next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
                          created_at=row.created_at, finished_at=row.finished_at, body=json.loads(row.body),
                          attempt_log=row.attempt_log or [])
