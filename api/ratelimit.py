"""Request rate limits per API key and per client address, with the `limits` library's asyncio API
(`limits.aio`): a count costs the event loop no blocked wait on Redis.

The store is Redis when the broker is Redis (every API process and host shares the counts) and
process memory in the embedded mode. Sliding-window counters: a client over a limit gets a 429
whose Retry-After says when the window has room again. Rate limiting guards the service; when
its Redis store cannot be reached requests pass (logged, and the store left alone for a while)
rather than fail with it: Redis being down is already a 503 where it matters, at submit.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from core.settings import Settings

from .loop_local import PerLoop

log = logging.getLogger("chainrule.api")
STORE_TIMEOUT_S = 0.25     # a Redis round trip on the request path: fail open past this
STORE_BACKOFF_S = 10.0     # after a store error, requests are not counted for this long


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    limit: str = ""


class RateLimits:
    def __init__(self, settings: Settings):
        self.per_key = parse_many(settings.rate_limit_per_key) if settings.rate_limit_per_key else []
        self.per_address = parse_many(settings.rate_limit_per_address) if settings.rate_limit_per_address else []
        self._redis: PerLoop[SlidingWindowCounterRateLimiter] | None = None
        if not settings.embedded_broker and settings.broker_url.startswith(("redis://", "rediss://")):
            url = f"async+{settings.broker_url}"
            # redis-py's asyncio client (already a dependency), not coredis
            self._redis = PerLoop(lambda: SlidingWindowCounterRateLimiter(storage_from_string(
                url, implementation="redispy", socket_timeout=STORE_TIMEOUT_S,
                socket_connect_timeout=STORE_TIMEOUT_S)))
        self._memory = SlidingWindowCounterRateLimiter(storage_from_string("async+memory://"))
        self._store_down_until = 0.0

    @property
    def limiter(self) -> SlidingWindowCounterRateLimiter:
        return self._memory if self._redis is None else self._redis.get()

    async def check_key(self, key_id: str) -> Verdict:
        return await self._check(self.per_key, "key", key_id)

    async def check_address(self, address: str) -> Verdict:
        return await self._check(self.per_address, "address", address)

    async def _check(self, items: list[RateLimitItem], scope: str, who: str) -> Verdict:
        if not items or time.monotonic() < self._store_down_until:
            return Verdict(True)
        try:
            limiter = self.limiter
            for item in items:
                if not await limiter.hit(item, scope, who):     # Redis' socket timeouts bound each wait
                    stats = await limiter.get_window_stats(item, scope, who)
                    return Verdict(False, max(1, math.ceil(stats.reset_time - time.time())), f"{item} per {scope}")
        except Exception as exc:  # noqa: BLE001 - the store is down: let requests through
            self._store_down_until = time.monotonic() + STORE_BACKOFF_S
            log.warning("rate-limit store unavailable (%s: %s); not limiting for %.0f s",
                        type(exc).__name__, exc, STORE_BACKOFF_S)
        return Verdict(True)
