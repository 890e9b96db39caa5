"""Threaded HTTP(S) server base shared by the doubles.

A double is a `BaseHTTPRequestHandler` subclass plus state; `ServedDouble`
runs it on 127.0.0.1 (port 0 = any free port) in a background thread, in the
test process or in the sandbox's service process.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sandbox.doubles.tls import LocalCA


class DoubleHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], state: Any, port: int = 0):
        super().__init__(("127.0.0.1", port), handler)
        self.state = state  # handlers reach their double's state as self.server.state


class DoubleHandler(BaseHTTPRequestHandler):
    """Base of the doubles' handlers: `self.server.state` is the double's state."""

    server: DoubleHTTPServer


class ServedDouble:
    """Start `handler` on 127.0.0.1 in a thread; TLS when a LocalCA is given."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], state: Any, ca: LocalCA | None = None, port: int = 0):
        self.server = DoubleHTTPServer(handler, state, port)
        self.scheme = "http"
        if ca is not None:
            self.server.socket = ca.server_context().wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self.server.serve_forever, name=handler.__name__, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> "ServedDouble":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "ServedDouble":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
