"""The HTTP side of `chainrule serve` and `chainrule api`: the app factory and uvicorn, with the
reconciler (core.reconciler) in a thread beside it."""
from __future__ import annotations

import threading
import time

from core import reconciler

from .supervisor import die_with_parent, stop_on_signals


def api_app(settings=None):
    """The FastAPI app, built, with what imports left on the heap frozen out of the garbage collector.

    torch, pydantic and FastAPI leave ~240k long-lived objects; every full collection used to walk
    them all, a 120-350 ms pause of every request in flight (the p99 of status polls under load).
    Frozen, a full collection scans only what requests allocated: ~4 ms. Also the factory that
    `--workers N` processes call (`chainrule.server:api_app`), with settings from the environment.
    """
    import gc
    import multiprocessing

    from api.main import create_app

    from core.settings import get_settings

    from .guarded_http import GuardedHttpProtocol

    if multiprocessing.parent_process() is not None:   # a uvicorn worker: end with the supervisor
        die_with_parent()
    GuardedHttpProtocol.configure(settings or get_settings())
    app = create_app(settings)
    gc.collect()
    gc.freeze()
    return app


def serve_http(settings, host: str, port: int, *, workers: int = 1, access_log: bool = False,
                on_started=None) -> None:
    """uvicorn with a reconciler thread beside it; returns after SIGINT/SIGTERM. One process serves in
    this (main) thread; with workers > 1 this process supervises that many uvicorn processes
    (restarting any that dies) which share the listening socket."""
    import uvicorn

    # loop "asyncio", not uvloop: at the same throughput uvloop left some connections waiting several
    # rounds (status polls, 50 keep-alive clients: p99 130-170 ms vs 37-39 ms, p90 alike)
    # http: httptools with header timeouts and a cap on connections per address (chainrule.guarded_http)
    from .guarded_http import GuardedHttpProtocol

    options = dict(host=host, port=port, log_level="info", lifespan="on", access_log=access_log,
                   timeout_graceful_shutdown=10, loop="asyncio", http=GuardedHttpProtocol)
    _, reconciler_stop = reconciler.start_thread(settings)
    try:
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            config = uvicorn.Config("chainrule.server:api_app", factory=True, workers=workers, **options)
            Multiprocess(config, sockets=[tcp_socket(config.bind_socket())]).run()   # handles SIGINT/SIGTERM itself
            return
        server = uvicorn.Server(uvicorn.Config(api_app(settings), **options))
        if on_started is not None:
            def announce():
                while not server.started and not server.should_exit:
                    time.sleep(0.05)
                if server.started:
                    on_started()
            threading.Thread(target=announce, daemon=True, name="announce").start()
        stop = threading.Event()
        stop_on_signals(stop)   # uvicorn re-raises the signal it caught into these after shutdown
        server.run()
    finally:
        reconciler_stop.set()


def tcp_socket(sock):
    """The listening socket, saying it is TCP: asyncio sets TCP_NODELAY only on connections accepted
    from a socket whose proto is IPPROTO_TCP, and uvicorn binds with proto 0. Without it each
    response (headers, then body) waits out a 40 ms delayed ACK."""
    import socket
    return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
