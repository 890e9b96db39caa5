"""A small fault-injecting HTTP proxy in front of moto's S3.

    with FaultyProxy("http://127.0.0.1:PORT") as proxy:
        proxy.add(Fault("upload_part", "slowdown", times=3))
        s3 = session.client("s3", endpoint_url=proxy.url)

Each request is classified (`upload_part`, `complete_upload`, `create_upload`,
`put_object`, `put_checkpoint`, ...) and the first matching fault with
`times` left decides what happens to it:

- `status` kinds (`internal` 500 InternalError, `slowdown` 503 SlowDown,
  `conflict` 409 ConditionalRequestConflict): an S3 XML error, the request
  never reaches moto.
- `reset`: the request body is read, then the connection is reset (RST) with
  no response: the request never reaches moto.
- `reset_after`: the request *is* forwarded and applied by moto, then the
  connection is reset: the client never learns it succeeded (a lost response).
- `hook`: call `action()` (e.g. a competing write) before forwarding.

Counts of what was seen and injected are kept per operation.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

_ERRORS = {
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "conflict": (
        409,
        "ConditionalRequestConflict",
        "A conflicting conditional operation is currently in progress against this resource. Please try again.",
    ),
}


def classify(method: str, path: str, query: dict[str, list[str]], headers: Any) -> str:
    if method == "PUT" and "partNumber" in query and "uploadId" in query:
        return "upload_part"
    if method == "POST" and "uploads" in query:
        return "create_upload"
    if method == "POST" and "uploadId" in query:
        return "complete_upload"
    if method == "DELETE" and "uploadId" in query:
        return "abort_upload"
    if method == "PUT" and "tagging" in query:
        return "put_tagging"
    if method == "PUT" and path.endswith("/checkpoint.json"):
        return "put_checkpoint"
    if method == "PUT" and "/manifests/" in path:
        return "put_manifest"
    if method == "PUT":
        return "put_object"
    return f"{method.lower()}"


@dataclass
class Fault:
    operation: str
    kind: str  # "internal" | "slowdown" | "reset" | "reset_after" | "hook"
    times: int = 1
    action: Callable[[], None] | None = None
    match: Callable[[str], bool] | None = None  # extra predicate on the path


@dataclass
class _Shared:
    upstream: tuple[str, int]
    faults: list[Fault] = field(default_factory=list)
    seen: Counter = field(default_factory=Counter)
    injected: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, operation: str, path: str) -> Fault | None:
        with self.lock:
            self.seen[operation] += 1
            for fault in self.faults:
                if fault.operation == operation and fault.times > 0 and (fault.match is None or fault.match(path)):
                    fault.times -= 1
                    self.injected[(operation, fault.kind)] += 1
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    shared: _Shared

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = bytearray()
            while True:
                size_line = self.rfile.readline()
                raw += size_line
                size = int(size_line.split(b";")[0].strip(), 16)
                chunk = self.rfile.read(size + 2)
                raw += chunk
                if size == 0:
                    # trailers until an empty line
                    while chunk not in (b"\r\n", b""):
                        chunk = self.rfile.readline()
                        raw += chunk
                    return bytes(raw)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reset(self) -> None:
        # SO_LINGER 0: close sends RST, the client sees "connection reset by peer".
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        body = self._body()
        operation = classify(self.command, parts.path, query, self.headers)
        fault = self.shared.take(operation, parts.path)
        if fault is not None and fault.kind in _ERRORS:
            status, code, message = _ERRORS[fault.kind]
            payload = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{message}</Message><RequestId>faulty-proxy</RequestId></Error>"
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if fault is not None and fault.kind == "reset":
            self._reset()
            return
        if fault is not None and fault.kind == "hook" and fault.action is not None:
            fault.action()
        conn = http.client.HTTPConnection(*self.shared.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(
                self.command,
                self.path,
                body=body if body or self.command in ("PUT", "POST") else None,
                headers=headers,
                encode_chunked=False,
            )
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        if fault is not None and fault.kind == "reset_after":
            self._reset()
            return
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                self.send_header(key, value)
        # A HEAD response has no body but announces the object's length.
        length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(payload))
        self.send_header("Content-Length", length or "0")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class FaultyProxy:
    def __init__(self, upstream_url: str):
        parts = urlsplit(upstream_url)
        self._shared = _Shared(upstream=(parts.hostname or "127.0.0.1", parts.port or 80))
        handler = type("Handler", (_Handler,), {"shared": self._shared})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, fault: Fault) -> Fault:
        with self._shared.lock:
            self._shared.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._shared.lock:
            self._shared.faults.clear()

    @property
    def seen(self) -> Counter:
        return self._shared.seen

    @property
    def injected(self) -> Counter:
        return self._shared.injected

    def __enter__(self) -> "FaultyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
