"""The whole local cloud (moto, STS, Entra, Cosmos gateway) configured from the dev stack, for worker subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from cosmos_export.contract import Env
from cosmos_export.layout import ExportTarget
from sandbox.serve import Running, worker_environment

WORKER = str(Path(sys.executable).parent / "cosmos-export")
#: ECS's default stopTimeout: SIGKILL follows SIGTERM after this long.
ECS_STOP_TIMEOUT = 30.0


@dataclass
class Outcome:
    code: int
    seconds: float
    stderr: str

    @property
    def last_line(self) -> str:
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""


class Sandbox:
    def __init__(self, running: Running, workdir: Path):
        self.running, self.workdir = running, workdir
        self.plan = running.plan
        self.env = worker_environment(running)
        creds = running.credentials
        self.s3 = boto3.client(
            "s3",
            endpoint_url=running.moto.url,
            region_name=self.plan.region,
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=creds["AWS_SESSION_TOKEN"],
        )

    def new_prefix(self) -> str:
        # Under the stack's export prefix: the sandbox's moto enforces the task role's policy, which reaches
        # only that prefix (a run elsewhere fails with AccessDenied, as it would in AWS).
        return f"{self.plan.prefix}/rel-{uuid.uuid4().hex[:8]}"

    def target(self, prefix: str, container: str) -> ExportTarget:
        return ExportTarget(self.plan.bucket, prefix, self.plan.cosmos_account, self.plan.cosmos_database, container)

    def seed(self, container: str, docs: list[dict]) -> None:
        self.running.cosmos_state.upsert_many(self.plan.cosmos_database, container, docs)

    def worker_env(self, prefix: str, container: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EXPORT_"))}
        env.update(self.env)
        env.update(
            {
                Env.PREFIX: prefix,
                Env.COSMOS_CONTAINERS: container,
                Env.PAGE_SIZE: "50",
                Env.LOG_LEVEL: "WARNING",
                Env.CONCURRENCY: "4",
            }
        )
        env.update(extra)
        return env

    def start(
        self,
        prefix: str,
        container: str,
        mode: str = "incremental",
        tag: str = "run",
        args: list[str] | None = None,
        **extra: str,
    ) -> subprocess.Popen:
        """`cosmos-export run --mode <mode>`, or `cosmos-export <args>` (e.g. a fan-out command)."""
        err = open(self.workdir / f"{tag}-{uuid.uuid4().hex[:6]}.stderr", "w+b")
        process = subprocess.Popen(
            [WORKER, *(args if args is not None else ["run", "--mode", mode])],
            env=self.worker_env(prefix, container, **extra),
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        process._stderr_file = err  # type: ignore[attr-defined]
        process._started = time.monotonic()  # type: ignore[attr-defined]
        return process

    @staticmethod
    def finish(process: subprocess.Popen, timeout: float = 120.0) -> Outcome:
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        err = process._stderr_file  # type: ignore[attr-defined]
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
        err.close()
        return Outcome(code, time.monotonic() - process._started, text)  # type: ignore[attr-defined]

    def run(
        self, prefix: str, container: str, mode: str = "incremental", args: list[str] | None = None, **extra: str
    ) -> Outcome:
        return self.finish(self.start(prefix, container, mode, args=args, **extra))

    @staticmethod
    def stop(process: subprocess.Popen, sig: int) -> float:
        """Send `sig`; return how long the worker took to exit (ECS kills after ECS_STOP_TIMEOUT)."""
        sent = time.monotonic()
        process.send_signal(sig)
        try:
            process.wait(timeout=ECS_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        return time.monotonic() - sent

    def faults(self) -> Any:
        return self.running.cosmos_state
