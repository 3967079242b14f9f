"""A request body must keep coming: each piece within body_timeout_s of the last, and, once
body_timeout_s have passed since its first piece, at MIN_BODY_RATE bytes a second on average; else 408.

A client that sends headers and then its body at a byte a second held a connection and a request
slot for as long as it liked. The wait is bounded only while the body is incomplete: once its last
piece is in, receive() waits for a disconnect (event streams do) for as long as it takes.
"""
from __future__ import annotations

import asyncio
import time

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MIN_BODY_RATE = 1024     # bytes/s: a dial-up line sends 7 KB/s; a trickle of a byte a second is an attack


class BodyTimeout:
    def __init__(self, app: ASGIApp, timeout_s: float):
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        await self.app(scope, self._paced(receive), send)

    def _paced(self, receive: Receive) -> Receive:
        complete, received, started = False, 0, None    # started: when the first piece came in

        async def paced() -> Message:
            nonlocal complete, received, started
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                raise _timeout(f"the request body stalled: no part of it arrived for {self.timeout_s:g} s") from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            started = started or time.monotonic()
            elapsed = time.monotonic() - started
            if not complete and elapsed > self.timeout_s and received < MIN_BODY_RATE * elapsed:
                raise _timeout(f"the request body arrives at {received / elapsed:.0f} bytes/s; after "
                               f"{self.timeout_s:g} s it must average {MIN_BODY_RATE} bytes/s")
            return message
        return paced


def _timeout(message: str) -> HTTPException:
    return HTTPException(408, message, headers={"Connection": "close"})
