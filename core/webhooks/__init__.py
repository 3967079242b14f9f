"""Webhooks: a key subscribes a URL to events; each event is a row in an outbox, written in the
transaction that commits the change it reports, and a worker task sends it, signed, retrying with
backoff until it is delivered or out of attempts.

    events.py    what can be subscribed to, and the bodies
    signing.py   the signature header (HMAC-SHA256 over "<timestamp>.<body>", as Stripe signs)
    targets.py   SSRF: a URL whose host resolves to a loopback, private or link-local address is refused
    outbox.py    record(): the outbox rows, in the caller's transaction; a wake-up sent after its commit
    delivery.py  deliver(): one attempt by a worker under a lease; dispatch_due(): the reconciler's resends
    sender.py    the attempt itself: a signed POST to the checked address, within one deadline

At least once: a row is committed with the change, so a crash after the commit loses nothing; a
worker that dies mid-send leaves its lease to expire and the reconciler sends the row again. A
receiver deduplicates on the delivery id header.
"""
from .events import EVENTS, JOB_EVENTS, WebhookEvent

__all__ = ["EVENTS", "JOB_EVENTS", "WebhookEvent"]
