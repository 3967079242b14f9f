"""API keys: made by the CLI, checked by the API. Only an HMAC of each key is stored.

A key is shown once, at creation: "cr_" + 43 url-safe characters (256 random bits).
The table keeps HMAC-SHA256(settings.key_pepper, key) as hex, so a leaked database
does not leak usable keys, and a short prefix so a person can tell keys apart.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from .tables import ApiKey, utcnow
from .settings import Settings, get_settings

KEY_PREFIX = "cr_"
DISPLAY_PREFIX_CHARS = 10  # "cr_" + 7 random characters: enough to tell keys apart, useless to guess


def hash_key(settings: Settings, key: str) -> str:
    """HMAC-SHA256 of the key under the server's pepper, hex (64 characters)."""
    pepper = settings.key_pepper.get_secret_value().encode()
    return hmac.new(pepper, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def create_key(session: Session, name: str, settings: Settings | None = None) -> tuple[ApiKey, str]:
    """Store a new key named `name` and commit; returns the row and the key (its only appearance)."""
    settings = settings or get_settings()
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError(f"key name must be 1 to 100 characters, got {len(name)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=hash_key(settings, key), prefix=key[:DISPLAY_PREFIX_CHARS])
    session.add(row)
    session.commit()
    return row, key


def find_key(session: Session, settings: Settings, key: str) -> ApiKey | None:
    """The live (not revoked) row for a presented key, or None."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(settings, key),
                                               ApiKey.revoked_at.is_(None)))


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(session: Session, key_id_or_prefix: str) -> ApiKey | None:
    """Revoke by id or display prefix and commit; None if no live key matches exactly one row.

    The API caches verified keys for a few seconds (api.deps.KEY_CACHE_TTL_S), so a
    revoked key stops working within that time, not instantly.
    """
    rows = list(session.scalars(select(ApiKey).where(
        (ApiKey.id == key_id_or_prefix) | (ApiKey.prefix == key_id_or_prefix),
        ApiKey.revoked_at.is_(None))))
    if len(rows) != 1:
        return None
    rows[0].revoked_at = utcnow()
    session.commit()
    return rows[0]
