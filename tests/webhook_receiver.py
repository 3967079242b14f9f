"""A webhook receiver for the tests: a real HTTP server on a free loopback port, in a thread, that
records every request and answers with the status its `answers` list gives next (200 when empty);
`hold` makes it keep a request open until released (a sender killed mid-attempt)."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from e2e_support import LOOPBACK


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, answers: list[int] | None = None):
        self.answers = list(answers or [])
        self.requests: list[Received] = []
        self.hold_next = False          # keep the next request open until release() (or stop())
        self.arrived = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    hold, receiver.hold_next = receiver.hold_next, False
                    status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.arrived.set()
                if hold:
                    receiver._released.wait(60)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        self._released.set()
