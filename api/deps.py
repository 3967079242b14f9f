"""Request dependencies: settings, a database session, and the API key behind the request."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Annotated, Iterator, TypeVar

from fastapi import Depends, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core.db import get_sessionmaker
from core.keys import find_key, hash_key
from core.settings import Settings
from core.tables import ID_PATTERN

KEY_CACHE_TTL_S = 5.0      # a revoked key keeps working at most this long
KEY_CACHE_MAX = 10_000
T = TypeVar("T")

JobId = Annotated[str, Path(pattern=ID_PATTERN, description="A job's id (a UUID).")]
DatasetId = Annotated[str, Path(pattern=ID_PATTERN, description="A dataset's id (a UUID).")]
SweepId = Annotated[str, Path(pattern=ID_PATTERN, description="A sweep's id (a UUID).")]


async def get_app_settings(request: Request) -> Settings:
    """Async although it awaits nothing: FastAPI runs a sync dependency in the threadpool, one
    thread hop on every request (about a quarter of a status poll's CPU)."""
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """One session per request; it connects lazily, so a request served from caches never does."""
    with get_sessionmaker(settings.database_url)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Principal:
    """The verified key a request acts for; everything it reads or writes is scoped to `id`."""
    id: str
    name: str
    prefix: str


class KeyCache:
    """Verified keys by HMAC for `ttl` seconds, so a status poll costs no key lookup.

    Only positive answers are cached: a new key works at once, a revoked one stops
    within `ttl`. Keyed by the HMAC, not the key, so memory holds no usable secrets.
    """

    def __init__(self, ttl: float = KEY_CACHE_TTL_S, max_entries: int = KEY_CACHE_MAX):
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> Principal | None:
        hit = self._entries.get(key_hash)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
            self._entries[key_hash] = (time.monotonic() + self.ttl, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


bearer = HTTPBearer(auto_error=False, description="An API key from `chainrule keys create NAME`.")
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def _lookup(settings: Settings, key: str) -> Principal | None:
    with get_sessionmaker(settings.database_url)() as session:
        row = find_key(session, settings, key)
        return None if row is None else Principal(row.id, row.name, row.prefix)


async def authenticate(app_state, settings: Settings, authorization: str) -> Principal:
    """The key behind an `Authorization: Bearer <key>` header, or a 401. Async so that a cached key is
    checked on the event loop, without a thread hop. Called by api.gate before the body is read."""
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        what = "malformed Authorization header" if authorization else "missing API key"
        raise HTTPException(401, f"{what}: send the header 'Authorization: Bearer <key>'", headers=_UNAUTHORIZED)
    cache: KeyCache = app_state.key_cache
    key_hash = hash_key(settings, key)
    principal = cache.get(key_hash)
    if principal is None:
        principal = await run_in_threadpool(_lookup, settings, key)
        if principal is None:
            raise HTTPException(401, "invalid API key", headers=_UNAUTHORIZED)
        cache.put(key_hash, principal)
    return principal


async def current_key(request: Request, settings: SettingsDep,
                      credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The key api.gate verified for this request (`credentials` only documents the scheme in OpenAPI)."""
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:
        principal = await authenticate(request.app.state, settings, request.headers.get("authorization", ""))
    return principal


CurrentKey = Annotated[Principal, Depends(current_key)]


def get_owned(session: Session, owner: Principal, table: type[T], row_id: str, what: str) -> T:
    """The row with primary key `row_id` if this key owns it. Another key's row is exactly as
    absent as a missing one: both are the same 404 (one primary-key SELECT)."""
    row = session.get(table, row_id)
    if row is None or row.owner_id != owner.id:
        raise HTTPException(404, f"{what} {row_id!r} not found")
    return row
