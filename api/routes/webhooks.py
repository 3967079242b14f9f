"""/v1/webhooks: a key's subscriptions to its jobs' and sweeps' events (make, list, read, delete) and
each one's delivery log. Nothing is sent from a request: events are outbox rows that workers send
(core.webhooks)."""
from __future__ import annotations

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import delete, func, select

from core.tables import ID_PATTERN, Webhook, WebhookDelivery
from core.webhooks import targets

from ..deps import CurrentKey, SessionDep, SettingsDep, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..schemas import LIST_LIMIT_MAX
from ..strict_json import StrictJSONRoute
from ..webhook_schemas import (DeliveryList, WebhookCreate, WebhookCreated, WebhookList, WebhookPublic,
                               delivery_public, webhook_public)

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/webhooks", tags=["webhooks"],
                   responses=error_responses(*EVERY_OPERATION))
NOT_FOUND = error_responses(404, s404="No such webhook for this key")
WebhookId = Annotated[str, Path(pattern=ID_PATTERN, description="A webhook's id (a UUID).")]


@router.post("", status_code=201, response_model=WebhookCreated, summary="Subscribe a URL to events",
             responses=error_responses(409, s409="The key already has max_webhooks_per_key webhooks"))
def create_webhook(req: WebhookCreate, response: Response, session: SessionDep, owner: CurrentKey,
                   settings: SettingsDep) -> WebhookCreated:
    """Each event is POSTed as JSON, signed (`Chainrule-Signature: t=...,v1=...`, HMAC-SHA256 with the
    secret over "t.body") with its delivery id in `Chainrule-Delivery`; docs/webhooks.md shows how to verify."""
    try:
        targets.check(req.url, settings.webhook_allow_private_targets)
    except targets.UnsafeTarget as exc:
        raise problem(422, ["body", "url"], f"url: {exc}")
    count = session.scalar(select(func.count()).select_from(Webhook).where(Webhook.owner_id == owner.id))
    if count >= settings.max_webhooks_per_key:
        raise problem(409, ["body"], f"this key has {count} webhooks; the limit is {settings.max_webhooks_per_key}: "
                      "delete one (DELETE /v1/webhooks/{id}) first")
    hook = Webhook(owner_id=owner.id, url=req.url, events=[str(e) for e in req.events],
                   secret=req.secret or f"whsec_{secrets.token_urlsafe(32)}")
    session.add(hook)
    session.commit()
    response.headers["Location"] = f"/v1/webhooks/{hook.id}"
    return WebhookCreated(**webhook_public(hook).model_dump(), secret=hook.secret)


@router.get("", response_model=WebhookList, summary="List this key's webhooks")
def list_webhooks(session: SessionDep, owner: CurrentKey) -> WebhookList:
    hooks = session.scalars(select(Webhook).where(Webhook.owner_id == owner.id)
                            .order_by(Webhook.created_at, Webhook.id)).all()
    return WebhookList(items=[webhook_public(h) for h in hooks], total=len(hooks))


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=NOT_FOUND, summary="A webhook")
def get_webhook(webhook_id: WebhookId, session: SessionDep, owner: CurrentKey) -> WebhookPublic:
    return webhook_public(get_owned(session, owner, Webhook, webhook_id, "webhook"))


@router.delete("/{webhook_id}", status_code=204, responses=NOT_FOUND,
               summary="Delete a webhook with its delivery log; pending deliveries are not sent")
def delete_webhook(webhook_id: WebhookId, session: SessionDep, owner: CurrentKey) -> Response:
    hook = get_owned(session, owner, Webhook, webhook_id, "webhook")
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
    session.delete(hook)
    session.commit()
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList, responses=NOT_FOUND,
            summary="The webhook's deliveries, newest first, each with its attempts")
def list_deliveries(webhook_id: WebhookId, session: SessionDep, owner: CurrentKey,
                    status: Annotated[Literal["pending", "delivered", "failed"] | None,
                                      Query(description="Only deliveries in this status.")] = None,
                    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 20,
                    offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> DeliveryList:
    hook = get_owned(session, owner, Webhook, webhook_id, "webhook")
    where = [WebhookDelivery.webhook_id == hook.id] + ([WebhookDelivery.status == status] if status else [])
    total = session.scalar(select(func.count()).select_from(WebhookDelivery).where(*where))
    rows = session.scalars(select(WebhookDelivery).where(*where)
                           .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
                           .limit(limit).offset(offset))
    return DeliveryList(items=[delivery_public(r) for r in rows], total=total, limit=limit, offset=offset)
