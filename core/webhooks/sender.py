"""One attempt at a delivery: a signed POST to a checked address, within one deadline.

httpx's timeouts bound each connect, read and write, not their sum: a receiver that trickles its
answer a byte at a time would hold a worker (which runs one task at a time, training included)
indefinitely. A timer shuts the connection's socket down at the deadline instead, which ends any
read or write blocked on it, so an attempt lasts at most webhook_timeout_s past its DNS lookup."""
from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx

from ..settings import Settings
from . import signing, targets

MAX_ERROR_CHARS = 300
USER_AGENT = "chainrule-webhooks/1"


class _Deadline:
    """Shuts down every socket the attempt opens once `seconds` have passed (httpcore's trace hook
    hands each new connection's stream over as it is made)."""

    def __init__(self, seconds: float):
        self.sockets: list[socket.socket] = []
        self.expired = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def trace(self, name: str, info: dict[str, Any]) -> None:
        if name == "connection.connect_tcp.complete":
            sock = info["return_value"].get_extra_info("socket")
            with self._lock:
                self.sockets.append(sock)
                if self.expired:
                    sock.shutdown(socket.SHUT_RDWR)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass      # already closed

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


def host_header(url: str) -> str:
    scheme, host, port = targets.parse(url)
    literal = f"[{host}]" if ":" in host else host
    return literal if port == (443 if scheme == "https" else 80) else f"{literal}:{port}"


def attempt(settings: Settings, url: str, secret: str, delivery_id: str, event: str, body: str) -> dict[str, Any]:
    """POST the body once: {status_code, error, ms, permanent} (permanent: a target not allowed)."""
    started = time.monotonic()
    try:
        target = targets.check(url, settings.webhook_allow_private_targets)
    except targets.UnsafeTarget as exc:
        return {"status_code": None, "error": str(exc)[:MAX_ERROR_CHARS], "ms": 0, "permanent": True}
    content = body.encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Host": host_header(url),
               signing.DELIVERY_HEADER: delivery_id, signing.EVENT_HEADER: event,
               signing.SIGNATURE_HEADER: signing.header(secret, content)}
    deadline = _Deadline(settings.webhook_timeout_s)
    try:   # to the address that was checked; TLS verifies the URL's host name. The answer's body is never read
        with deadline, \
                httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False) as client, \
                client.stream("POST", target.pinned_url, content=content, headers=headers,
                              extensions={"sni_hostname": target.host, "trace": deadline.trace}) as response:
            code, error = response.status_code, None if response.is_success else f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        code, error = None, f"{type(exc).__name__}: {exc}"
    if deadline.expired and error is not None:
        error = f"no complete answer within webhook_timeout_s={settings.webhook_timeout_s:g} s ({error})"
    return {"status_code": code, "error": None if error is None else error[:MAX_ERROR_CHARS],
            "ms": round(1000 * (time.monotonic() - started)), "permanent": False}
