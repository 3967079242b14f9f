"""The outbox: record() adds one webhook_deliveries row per webhook of the key subscribed to the
event, in the caller's transaction, so the event exists exactly when the change it reports is
committed. Given the settings, it also has the rows sent to a worker right after that commit (the
reconciler sends those it was not given, and any whose message was lost: core.webhooks.delivery)."""
from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from ..broker import WEBHOOK_TASK, send
from ..settings import Settings
from ..tables import Job, Sweep, Webhook, WebhookDelivery, new_id, utcnow
from .events import JOB_EVENTS, WebhookEvent, finding_data, job_data, sweep_data

log = logging.getLogger("chainrule.webhooks")

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
WEBHOOK_QUEUE = "auto"      # every worker consumes it
_KICK = "chainrule_webhook_kick"    # session.info: (settings, delivery ids) to send after the commit


def record(session: Session, settings: Settings | None, owner_id: str, event_: WebhookEvent,
           data: dict[str, Any]) -> list[str]:
    """Add the deliveries of `event_` for the key's subscribed webhooks; their ids."""
    hooks = session.scalars(select(Webhook).where(Webhook.owner_id == owner_id)).all()
    now, ids = utcnow(), []
    for hook in hooks:
        if event_ not in hook.events:
            continue
        delivery_id = new_id()
        body = json.dumps({"id": delivery_id, "type": str(event_), "created_at": now.isoformat(),
                           "webhook_id": hook.id, "data": data}, separators=(",", ":"))
        session.add(WebhookDelivery(id=delivery_id, webhook_id=hook.id, event=str(event_), body=body,
                                    status=PENDING, attempts=0, attempt_log=[], next_attempt_at=now,
                                    sent_at=now if settings is not None else None, created_at=now))
        ids.append(delivery_id)
    if ids and settings is not None:
        session.info.setdefault(_KICK, (settings, []))[1].extend(ids)
    return ids


def job_ended(session: Session, settings: Settings | None, job_id: str) -> list[str]:
    """The event of a job that has just reached a final status in this transaction."""
    row = session.execute(select(Job.id, Job.owner_id, Job.name, Job.status, Job.sweep_id, Job.error_code,
                                 Job.error_message, Job.finished_at).where(Job.id == job_id)).first()
    if row is None or row.status not in JOB_EVENTS:
        return []
    return record(session, settings, row.owner_id, JOB_EVENTS[row.status], job_data(row))


def sweep_ended(session: Session, settings: Settings | None, sweep_id: str) -> list[str]:
    row = session.execute(select(Sweep.id, Sweep.owner_id, Sweep.name, Sweep.status, Sweep.error_code,
                                 Sweep.error_message, Sweep.finished_at).where(Sweep.id == sweep_id)).first()
    return [] if row is None else record(session, settings, row.owner_id, WebhookEvent.SWEEP_FINISHED,
                                         sweep_data(row))


def error_findings(session: Session, job_id: str, findings: list[dict[str, Any]]) -> list[str]:
    """finding.error for each finding of severity error (sent at the reconciler's next pass)."""
    errors = [f for f in findings if f.get("severity") == "error"]
    if not errors:
        return []
    owner_id = session.scalar(select(Job.owner_id).where(Job.id == job_id))
    return [i for f in errors for i in record(session, None, owner_id, WebhookEvent.FINDING_ERROR,
                                              finding_data(job_id, f))]


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    settings, ids = session.info.pop(_KICK, (None, []))
    for delivery_id in ids:
        try:
            send(settings, delivery_id, WEBHOOK_QUEUE, WEBHOOK_TASK)
        except Exception as exc:   # noqa: BLE001 - the row is committed; the reconciler sends it
            log.warning("could not send webhook delivery %s to the broker (%s: %s); the reconciler will",
                        delivery_id, type(exc).__name__, exc)
            return


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_KICK, None)
