"""Load shedding: a bound on the requests one API process works on at once.

Past `max_requests_in_flight` a request is answered 503 "busy" with Retry-After before any of it is
read, in microseconds, instead of queueing for a thread and a database connection it would wait
seconds for (500 concurrent list requests once left 210 hanging for 60 s). The probes are never
shed, so liveness stays fast under any load; event streams are long and mostly idle, and have their
own caps (api.routes.events), so they are not counted here.
"""
from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import busy_response

UNSHED_PATHS = ("/healthz", "/readyz")
STREAM_SUFFIX = "/events"


class InFlightLimit:
    def __init__(self, app: ASGIApp, max_in_flight: int, retry_after_s: int):
        self.app, self.max_in_flight, self.retry_after_s = app, max_in_flight, retry_after_s
        self.in_flight = 0      # one event loop per process: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNSHED_PATHS or path.endswith(STREAM_SUFFIX):
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            why = f"{self.in_flight} requests in flight, the most this process takes at once"
            return await busy_response(self.retry_after_s, why)(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
