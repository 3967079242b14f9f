"""Open event streams per key across every API process, when the broker is Redis: each stream holds
a lease in the key's sorted set (member: the stream, score: when its lease ends), taken atomically
under the limit by a Lua script, renewed while the stream runs and removed when it ends. A process
that dies leaves leases that lapse within LEASE_S. Redis unreachable: streams are not refused for it
(each process still holds its own per-key count, api.routes.events.StreamSlots).
"""
from __future__ import annotations

import logging
import time
import uuid

import redis.asyncio

from .loop_local import PerLoop

log = logging.getLogger("chainrule.api")
LEASE_S = 60.0
RENEW_S = 20.0          # a running stream renews its lease this often
TIMEOUT_S = 0.25
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class SharedStreamSlots:
    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self._clients: PerLoop[redis.asyncio.Redis] = PerLoop(lambda: redis.asyncio.Redis.from_url(
            redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S))

    def _client(self) -> redis.asyncio.Redis:
        return self._clients.get()

    @staticmethod
    def _key(key_id: str) -> str:
        return f"chainrule:event-streams:{key_id}"

    async def acquire(self, key_id: str, limit: int) -> str | None:
        """A lease's id, or None when the key already holds `limit` streams in all processes."""
        stream_id, now = uuid.uuid4().hex, time.time()
        try:
            won = await self._client().eval(_ACQUIRE, 1, self._key(key_id), now, now + LEASE_S, limit, stream_id,
                                            int(LEASE_S * 1000))
        except Exception as exc:  # noqa: BLE001 - Redis down: the per-process count still bounds streams
            log.warning("event-stream leases unavailable (%s: %s); counting in this process only",
                        type(exc).__name__, exc)
            return stream_id
        return stream_id if won else None

    async def renew(self, key_id: str, stream_id: str) -> None:
        try:
            await self._client().zadd(self._key(key_id), {stream_id: time.time() + LEASE_S}, xx=True)
        except Exception:  # noqa: BLE001 - the lease lapses; the stream goes on
            pass

    async def release(self, key_id: str, stream_id: str) -> None:
        try:
            await self._client().zrem(self._key(key_id), stream_id)
        except Exception:  # noqa: BLE001 - the lease lapses within LEASE_S
            pass
