"""The signature of a delivery: `Chainrule-Signature: t=<unix seconds>,v1=<hex>`, where the hex is
HMAC-SHA256 with the webhook's secret over "<t>.<body>" (Stripe's scheme). Signing the timestamp with
the body lets a receiver refuse an old delivery replayed; docs/webhooks.md shows a receiver's check."""
from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Chainrule-Signature"
DELIVERY_HEADER = "Chainrule-Delivery"     # the delivery's id: the same on every retry (deduplicate on it)
EVENT_HEADER = "Chainrule-Event"
TOLERANCE_S = 300                          # what verify() accepts as recent, by default


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(secret: str, header_value: str, body: bytes, tolerance_s: float = TOLERANCE_S,
           now: float | None = None) -> bool:
    """A receiver's check: some v1 signature matches and t is within tolerance_s of now."""
    parts = [item.split("=", 1) for item in header_value.split(",") if "=" in item]
    stamps = [value for key, value in parts if key.strip() == "t"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit():
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return any(key.strip() == "v1" and hmac.compare_digest(value.strip(), expected) for key, value in parts)
