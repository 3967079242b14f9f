"""A cap on every request body, answered as JSON like every other error.

Starlette's own body limit answers a declared-too-large Content-Length with plain text;
this one answers `{"detail": ...}` up front for a declared size and, for bodies without
one (chunked), raises a 413 HTTPException from `receive` once the count passes the cap,
which the app's handlers turn into JSON. Uploads have their own, tighter file limit
(api.upload); this only bounds what any request can make the server read.
"""
from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": f"the request body is {int(declared)} bytes; the limit is "
                                               f"{self.max_bytes}"}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"the request body exceeds the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)
