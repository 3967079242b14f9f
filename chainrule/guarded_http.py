"""The HTTP protocol `chainrule serve` and `chainrule api` (the production server, docker-compose's
`api` service) run uvicorn with: uvicorn's httptools protocol, plus what a slow or greedy client
must not be able to do, which uvicorn has no setting for.

- A request's line and headers must arrive within header_timeout_s of its first byte (or of the
  connection, for the first request): else 408 and the connection closes. 300 half-sent requests
  held 70 s were never closed before. (The body's pace is api.body_timeout's: an ASGI middleware.)
- One client address holds at most max_connections_per_address connections to this process: the
  next is answered 429 and closed.

The limits are class attributes set by configure(settings), in each serving process (a spawned
`--workers` process calls it from chainrule.server.api_app), since uvicorn builds the protocol.
"""
from __future__ import annotations

import asyncio
from collections import Counter

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0
    max_connections_per_address: int = 64
    open_by_address: Counter = Counter()      # this process's connections per client address

    @classmethod
    def configure(cls, settings) -> None:
        cls.header_timeout_s = settings.header_timeout_s
        cls.max_connections_per_address = settings.max_connections_per_address

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else None
        self._header_timer: asyncio.TimerHandle | None = None
        self.open_by_address[self._address] += 1
        if self.open_by_address[self._address] > self.max_connections_per_address:
            self._refuse(429, f"more than {self.max_connections_per_address} connections from one address; "
                              "close some or reuse them (keep-alive)")
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        self.open_by_address[self._address] -= 1
        if self.open_by_address[self._address] <= 0:
            del self.open_by_address[self._address]
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()                 # a kept-alive connection's next request

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self._refuse(408, f"the request line and headers did not arrive within {self.header_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """A JSON error like every other, then the connection closed (no request ever reached the app)."""
        if self.transport.is_closing():
            return
        body = orjson.dumps({"detail": message})
        reason = {408: b"Request Timeout", 429: b"Too Many Requests"}[status]
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
        self.transport.close()
