"""Start and stop the real third-party servers on 127.0.0.1.

moto in server mode (S3, STS credentials) and `@vercel/cosmosdb-server`
(an independent Cosmos DB implementation; query path only, see DESIGN.md).
Both run as child processes so the worker's own CPU and memory can be
measured apart from theirs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SANDBOX_DIR = Path(__file__).resolve().parent
COSMOSDB_SERVER_BIN = SANDBOX_DIR / "node_modules" / ".bin" / "cosmosdb-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


@dataclass
class Service:
    name: str
    url: str
    port: int
    process: subprocess.Popen = field(repr=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            # Own process group: also stops anything the service spawned.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(name: str, argv: list[str], port: int, scheme: str, log_dir: Path | None) -> Service:
    out = open(log_dir / f"{name}.log", "ab") if log_dir else subprocess.DEVNULL
    process = subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    service = Service(name=name, url=f"{scheme}://127.0.0.1:{port}", port=port, process=process)
    try:
        wait_for_port(port, process, name)
    except Exception:
        service.stop()
        raise
    return service


def start_moto(port: int | None = None, log_dir: Path | None = None) -> Service:
    """moto in server mode: S3 (with conditional writes) and STS."""
    port = port or free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return _spawn("moto", argv, port, "http", log_dir)


def start_cosmosdb_server(port: int | None = None, log_dir: Path | None = None) -> Service:
    """@vercel/cosmosdb-server over HTTPS (its bundled certificate expired: clients skip verification)."""
    if not COSMOSDB_SERVER_BIN.exists():
        raise FileNotFoundError(f"{COSMOSDB_SERVER_BIN} is missing: run `make deps` (npm ci in sandbox/) first")
    port = port or free_port()
    argv = [str(COSMOSDB_SERVER_BIN), "--host", "127.0.0.1", "-p", str(port)]
    return _spawn("cosmosdb-server", argv, port, "https", log_dir)
