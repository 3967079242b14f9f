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
import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import or_, select, update

from ..broker import WEBHOOK_TASK, send
from ..db import session_scope
from ..settings import Settings
from ..tables import Webhook, WebhookDelivery, utcnow
from . import signing, targets
from .outbox import DELIVERED, FAILED, PENDING, WEBHOOK_QUEUE

log = logging.getLogger("chainrule.webhooks")

LEASE_MARGIN_S = 5.0      # past the attempt's timeout: the time to write its outcome
BATCH = 200               # deliveries sent per reconciler pass
MAX_ERROR_CHARS = 300
USER_AGENT = "chainrule-webhooks/1"


def backoff_s(settings: Settings, attempts: int) -> float:
    """The wait after the attempts-th failed attempt: base, 2 base, 4 base, ..., at most the cap."""
    return min(settings.webhook_retry_base_s * 2 ** (attempts - 1), settings.webhook_retry_max_s)


def attempt(settings: Settings, url: str, secret: str, delivery_id: str, event: str, body: str) -> dict[str, Any]:
    """POST the body once: {status_code, error, ms, permanent} (permanent: a target not allowed)."""
    started = time.monotonic()
    try:
        target = targets.check(url, settings.webhook_allow_private_targets)
    except targets.UnsafeTarget as exc:
        return {"status_code": None, "error": str(exc)[:MAX_ERROR_CHARS], "ms": 0, "permanent": True}
    content = body.encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Host": _host_header(url),
               signing.DELIVERY_HEADER: delivery_id, signing.EVENT_HEADER: event,
               signing.SIGNATURE_HEADER: signing.header(secret, content)}
    try:   # to the address that was checked; TLS verifies the URL's host name. The answer's body is never read
        with httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False) as client, \
                client.stream("POST", target.pinned_url, content=content, headers=headers,
                              extensions={"sni_hostname": target.host}) as response:
            code, error = response.status_code, None if response.is_success else f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        code, error = None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    return {"status_code": code, "error": error, "ms": round(1000 * (time.monotonic() - started)),
            "permanent": False}


def _host_header(url: str) -> str:
    scheme, host, port = targets.parse(url)
    literal = f"[{host}]" if ":" in host else host
    return literal if port == (443 if scheme == "https" else 80) else f"{literal}:{port}"


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
