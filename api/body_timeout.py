"""A request body must keep coming: each piece within body_timeout_s of the last, else 408.

A client that sends headers and then its body at a byte a second held a connection and a request
slot for as long as it liked. The wait is bounded only while the body is incomplete: once its last
piece is in, receive() waits for a disconnect (event streams do) for as long as it takes.
"""
from __future__ import annotations

import asyncio

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTimeout:
    def __init__(self, app: ASGIApp, timeout_s: float):
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        await self.app(scope, self._paced(receive), send)

    def _paced(self, receive: Receive) -> Receive:
        complete = False

        async def paced() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body stalled: no part of it arrived for {self.timeout_s:g} s",
                                    headers={"Connection": "close"}) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message
        return paced
