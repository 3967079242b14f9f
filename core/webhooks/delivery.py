"""Sending the outbox: deliver() makes one attempt at a delivery (a worker's Celery task), and
dispatch_due() hands due deliveries to the broker (the reconciler, every pass).

    pending ──2xx──▶ delivered
       │ ▲
       │ └── an error or non-2xx, attempts left: next_attempt_at = now + base * 2**(attempts-1) (capped)
       └──── attempts used up, or a target that is not allowed ──▶ failed

A worker takes a delivery by a lease (locked_until: the attempt's timeout and a margin) in one
conditional UPDATE, so of several messages for one delivery one attempt runs at a time; its outcome
is written only while the lease is still its own. A worker killed mid-attempt leaves the lease to
expire; the row is still pending and due, and dispatch_due sends it again (at least once).
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update

from ..broker import WEBHOOK_TASK, send
from ..db import session_scope
from ..settings import Settings
from ..tables import Webhook, WebhookDelivery, utcnow
from .outbox import DELIVERED, FAILED, PENDING, WEBHOOK_QUEUE
from .sender import attempt

log = logging.getLogger("chainrule.webhooks")

LEASE_MARGIN_S = 5.0      # past the attempt's deadline (sender.py): its DNS lookup and writing its outcome
BATCH = 200               # deliveries sent per reconciler pass


def backoff_s(settings: Settings, attempts: int) -> float:
    """The wait after the attempts-th failed attempt: base, 2 base, 4 base, ..., at most the cap."""
    return min(settings.webhook_retry_base_s * 2 ** (attempts - 1), settings.webhook_retry_max_s)


def deliver(settings: Settings, delivery_id: str) -> str:
    """One attempt, if the delivery is pending, due and not leased: its status after, or 'skipped'."""
    now = utcnow()
    lease = now + timedelta(seconds=settings.webhook_timeout_s + LEASE_MARGIN_S)
    with session_scope(settings.database_url) as s:
        number = s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == PENDING,
                   WebhookDelivery.next_attempt_at <= now,
                   or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now))
            .values(locked_until=lease, attempts=WebhookDelivery.attempts + 1)
            .returning(WebhookDelivery.attempts)).scalar()
        if number is None:
            return "skipped"
        row = s.execute(select(WebhookDelivery.event, WebhookDelivery.body, WebhookDelivery.attempt_log,
                               Webhook.url, Webhook.secret)
                        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                        .where(WebhookDelivery.id == delivery_id)).one()
    outcome = attempt(settings, row.url, row.secret, delivery_id, row.event, row.body)
    return _record(settings, delivery_id, number, lease, list(row.attempt_log or []), outcome)


def _record(settings: Settings, delivery_id: str, number: int, lease, log_: list, outcome: dict[str, Any]) -> str:
    now = utcnow()
    permanent = outcome.pop("permanent")
    log_.append({"attempt": number, "at": now.isoformat(), **outcome})
    values: dict[str, Any] = {"attempt_log": log_, "locked_until": None}
    if outcome["error"] is None:
        values.update(status=DELIVERED, finished_at=now)
    elif permanent or number >= settings.webhook_max_attempts:
        values.update(status=FAILED, finished_at=now)
    else:
        values.update(next_attempt_at=now + timedelta(seconds=backoff_s(settings, number)), sent_at=None)
    with session_scope(settings.database_url) as s:
        won = s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                                      WebhookDelivery.locked_until == lease)
                        .values(**values)).rowcount
    if not won:   # the lease ran out and another worker took the delivery: its outcome stands
        log.warning("webhook delivery %s: attempt %d outlived its lease; outcome not recorded", delivery_id, number)
        return "lost"
    status = values.get("status", PENDING)
    log.info("webhook delivery %s: attempt %d %s (%s)", delivery_id, number, status,
             outcome["error"] or outcome["status_code"])
    return status


def dispatch_due(settings: Settings) -> list[str]:
    """Send each pending delivery that is due, not leased, and not sent in the last resend_after_s (a
    message lost, or waiting behind a busy worker) to the broker; the ids sent."""
    now = utcnow()
    resend = now - timedelta(seconds=settings.resend_after_s)
    with session_scope(settings.database_url) as s:
        rows = s.execute(select(WebhookDelivery.id, WebhookDelivery.sent_at).where(
            WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
            or_(WebhookDelivery.sent_at.is_(None), WebhookDelivery.sent_at < resend))
            .order_by(WebhookDelivery.next_attempt_at).limit(BATCH)).all()
    sent = []
    for delivery_id, sent_at in rows:
        previous = WebhookDelivery.sent_at.is_(None) if sent_at is None else WebhookDelivery.sent_at == sent_at
        with session_scope(settings.database_url) as s:   # of several reconcilers, one sends
            won = s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, previous)
                            .values(sent_at=now)).rowcount
        if not won:
            continue
        try:
            send(settings, delivery_id, WEBHOOK_QUEUE, WEBHOOK_TASK)
        except Exception as exc:  # noqa: BLE001 - broker down: sent again after resend_after_s
            log.warning("could not send webhook delivery %s (%s: %s)", delivery_id, type(exc).__name__, exc)
            break
        sent.append(delivery_id)
    return sent
