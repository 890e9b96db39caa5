"""The whole chain of trust on loopback, configured from the Pulumi program run under mocks.

`chain(run)` stands up, for a `StackRun` (the dev stack, or a deliberately broken
copy of it): the task role's credentials minted by moto's AssumeRole, the STS
double (issuer, audiences, max duration, algorithms from the declared task role
policy), the Entra double (trusting the STS JWKS; app, service principal and
federated credentials as declared), and the Cosmos gateway double (account,
database, containers, RBAC assignments with their role's data actions, tokens
verified by the Entra double). All of it through `sandbox.plan` / `sandbox.serve`,
so no value of the chain is typed here. The worker's settings are the task
definition's environment plus local endpoint overrides (`sandbox.serve.worker_environment`).

Isolation: every chain writes under its own prefix below the stack's prefix,
so tests sharing the session's moto server never see each other's checkpoints.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from cosmos_export import jsonl
from cosmos_export.commit import Checkpoint, CommitStore, Manifest
from cosmos_export.contract import Env
from cosmos_export.layout import ExportTarget, checkpoint_key
from cosmos_export.settings import WorkerSettings, load_settings
from sandbox import serve
from sandbox.mocked_stack import StackRun, run_stack
from sandbox.plan import SandboxPlan, plan_from_run
from sandbox.services import Service, start_moto

#: Properties Cosmos adds to every document; they legitimately differ between implementations.
SYSTEM_PROPERTIES = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")


def user_fields(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in SYSTEM_PROPERTIES}


@pytest.fixture(scope="session")
def dev_run() -> StackRun:
    """The dev stack's program, run once under mocks; tests alter deep copies of it."""
    return run_stack("dev")


@pytest.fixture()
def fresh_run(dev_run):
    return lambda: copy.deepcopy(dev_run)


@dataclass
class Chain:
    plan: SandboxPlan
    running: serve.Running
    env: dict[str, str]  # the worker's full environment (task definition + local overrides)
    s3: Any  # S3 client with the task role's credentials

    @property
    def gateway(self):
        return self.running.cosmos_state

    @property
    def sts(self):
        return self.running.sts_state

    @property
    def entra(self):
        return self.running.entra_state

    @property
    def prefix(self) -> str:
        return self.env[Env.PREFIX]

    def settings(self, **overrides: Any) -> WorkerSettings:
        return load_settings(**overrides)

    def target(self, container: str, settings: WorkerSettings | None = None) -> ExportTarget:
        s = settings or self.settings()
        return ExportTarget(s.bucket, s.prefix, s.account_name or "", s.cosmos_database, container)

    def manifests(self, container: str, settings: WorkerSettings | None = None) -> list[Manifest]:
        return CommitStore(self.s3, self.target(container, settings)).committed_manifests()

    def checkpoint(self, container: str) -> Checkpoint:
        target = self.target(container)
        body = self.s3.get_object(Bucket=target.bucket, Key=checkpoint_key(target))["Body"].read()
        return Checkpoint.model_validate_json(body)

    def part_documents(self, key: str, compression: jsonl.Compression) -> tuple[bytes, bytes, list[dict]]:
        """(object bytes, decompressed bytes, decoded documents) of one part."""
        body = self.s3.get_object(Bucket=self.plan.bucket, Key=key)["Body"].read()
        raw = jsonl.decompress(body, compression)
        return body, raw, [json.loads(line) for line in raw.splitlines()]

    def exported(self, container: str, run_id: str, settings: WorkerSettings | None = None) -> list[dict]:
        s = settings or self.settings()
        (manifest,) = [m for m in self.manifests(container, s) if m.run_id == run_id]
        docs: list[dict] = []
        for part in manifest.parts:
            docs.extend(self.part_documents(part.key, s.compression)[2])
        return docs

    def cli(self, *args: str, timeout: float = 120, **env_overrides: str) -> subprocess.CompletedProcess:
        """The real `cosmos-export` CLI as ECS runs it: a process with the task's environment."""
        exe = Path(sys.executable).parent / "cosmos-export"
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "cosmos_export"]
        env = {**os.environ, **self.env, **env_overrides, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        return subprocess.run(
            argv + list(args), env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )


def _ensure_bucket(moto_url: str, plan: SandboxPlan, credentials: dict[str, str]) -> None:
    try:
        serve._create_bucket(moto_url, plan, credentials)
    except ClientError as e:  # the session's moto already has it from an earlier chain
        if e.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise


@pytest.fixture(scope="session")
def iam_moto_server() -> Iterator[Service]:
    """A moto server of its own: IAM is enforced on it after each chain's bootstrap (sandbox/iam.py)."""
    with start_moto() as service:
        yield service


@pytest.fixture()
def chain(iam_moto_server, local_ca, monkeypatch, dev_run):
    """`chain(run=None) -> Chain`: start the doubles for a stack run and point the worker's environment at them.

    The run's task roles are created in moto as declared (trust, inline policy) and IAM is enforced:
    a worker call the task role's policy does not allow fails with AccessDenied.
    """
    started: list[serve.Running] = []
    moto_server = iam_moto_server

    def start(run: StackRun | None = None) -> Chain:
        plan = plan_from_run(run or dev_run)
        running = serve.Running(plan=plan, cosmos_kind="gateway", ca=local_ca, moto=moto_server)
        started.append(running)  # moto belongs to the session: never among the stoppers
        serve.bootstrap(moto_server.url, plan, running, create_bucket=_ensure_bucket)
        serve.start_identity(plan, local_ca, running.credentials, running)
        serve.start_cosmos(plan, local_ca, "gateway", running, None)
        env = serve.worker_environment(running)
        env[Env.PREFIX] = f"{plan.prefix}/e2e-{uuid.uuid4().hex[:8]}"
        # A chain replaces the previous one's environment entirely.
        for key in [k for k in os.environ if k.startswith("EXPORT_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client(
            "s3",
            endpoint_url=moto_server.url,
            region_name=plan.region,
            aws_access_key_id=running.credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=running.credentials["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=running.credentials["AWS_SESSION_TOKEN"],
        )
        return Chain(plan, running, env, s3)

    yield start
    for running in reversed(started):
        running.stop()
