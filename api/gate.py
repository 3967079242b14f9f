"""What every request passes before the app reads a byte of its body, in this order:

  1. the client address's rate limit;
  2. on /v1: the API key (Bearer), checked from the header alone, so an unauthenticated body is
     never read (a 90 MB body without a key cost 3 s and 380 MB before its 401 when FastAPI parsed
     it first), then the key's rate limit;
  3. the body's size: an upload (POST /v1/datasets) may carry max_upload_bytes, anything else
     max_json_bytes; a declared Content-Length past it is a 413 at once, and a body without one
     is counted as it arrives.

Each refusal is JSON like every other error. The verified key goes to the request's state, where
api.deps.current_key finds it. Every response, a refusal too, carries SECURITY_HEADERS.
"""
from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.db import is_busy, is_unavailable
from core.settings import Settings

from .deps import authenticate
from .errors import busy_response, unavailable_response
from .ratelimit import RateLimits, Verdict

PROBES = ("/healthz", "/readyz")    # orchestrators call these; they are never limited
# Pages are ours only: /docs (Swagger UI) and /ui load scripts and styles from this origin, and
# Swagger UI starts from an inline script and styles; ReDoc runs a web worker from a blob: URL.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
       "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"), (b"content-security-policy", CSP.encode())]
UPLOAD_ROUTE = ("POST", "/v1/datasets")
UPLOAD_OVERHEAD = 1024 * 1024      # multipart headers and form fields beside the file


class Gate:
    def __init__(self, app: ASGIApp, settings: Settings, rate_limits: RateLimits):
        self.app, self.settings, self.rate_limits = app, settings, rate_limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _with_security_headers(send)
        if scope["path"] in PROBES:
            return await self.app(scope, receive, send)
        refusal = await self._refusal(scope)
        if refusal is not None:
            return await refusal(scope, receive, send)
        max_bytes = self.settings.max_upload_bytes + UPLOAD_OVERHEAD \
            if (scope["method"], scope["path"].rstrip("/")) == UPLOAD_ROUTE else self.settings.max_json_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > max_bytes:
            return await _too_large(int(declared), max_bytes)(scope, receive, send)
        await self.app(scope, _counted(receive, max_bytes), send)

    async def _refusal(self, scope: Scope) -> JSONResponse | None:
        client = scope.get("client")
        verdict = await self.rate_limits.check_address(client[0] if client else "unknown")
        if not verdict.allowed:
            return _too_many(verdict)
        if not scope["path"].startswith("/v1/"):
            return None
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        try:
            principal = await authenticate(scope["app"].state, self.settings, header)
        except HTTPException as e:
            return JSONResponse({"detail": e.detail}, status_code=e.status_code, headers=e.headers)
        except Exception as e:
            if is_busy(e):
                return busy_response(self.settings.busy_retry_after_s, "every database connection is in use")
            if is_unavailable(e):
                return unavailable_response()
            raise
        scope.setdefault("state", {})["principal"] = principal
        verdict = await self.rate_limits.check_key(principal.id)
        return None if verdict.allowed else _too_many(verdict)


def _with_security_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            message["headers"] = [*message.get("headers", []),
                                  *((k, v) for k, v in SECURITY_HEADERS if k not in present)]
        await send(message)
    return sending


def _counted(receive: Receive, max_bytes: int) -> Receive:
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise HTTPException(413, f"the request body exceeds the limit of {max_bytes} bytes")
        return message
    return limited


def _too_large(declared: int, max_bytes: int) -> JSONResponse:
    return JSONResponse({"detail": f"the request body is {declared} bytes; the limit is {max_bytes}"},
                        status_code=413)


def _too_many(verdict: Verdict) -> JSONResponse:
    return JSONResponse({"detail": f"rate limit exceeded ({verdict.limit}); retry in {verdict.retry_after_s} s"},
                        status_code=429, headers={"Retry-After": str(verdict.retry_after_s)})
