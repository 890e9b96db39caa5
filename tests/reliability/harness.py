"""Shared pieces of the reliability tests: a world to export from, and the read-back that counts.

`World` is one isolated export: a fresh gateway container (4 feed ranges) and a
fresh S3 prefix, exported in-process with `run_export` (credentials injected)
so faults can be switched on and off between and during runs. `committed`
reads every committed manifest and every part it lists back from S3, and
counts each (id, version) pair: the exactly-once property is checked on those
counts, never on what the worker says it did.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import boto3

from cosmos_export import contract, export, jsonl
from cosmos_export.commit import CommitStore
from cosmos_export.layout import ExportTarget
from cosmos_export.settings import WorkerSettings
from cosmos_export.verify import verify_run

DB = "rel"
ACCOUNT = "relacct"
OID = "7d3c1a52-7f1e-4c7e-9a3b-0f2f6f1c2b11"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "22222222-2222-3333-4444-555555555555"
SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")

RESULTS_ENV = "RELIABILITY_RESULTS"


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def record(fault: str, *, trials: int, documents: int, outcome: str) -> None:
    """One row of docs/reliability.md (written only when the report command collects them)."""
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"fault": fault, "trials": trials, "documents": documents, "outcome": outcome}) + "\n")


def make_docs(n: int, *, tag: str = "d", version: int = 1, offset: int = 0) -> list[dict]:
    return [
        {"id": f"{tag}-{i}", "pk": f"k-{i % 61}", "v": version, "body": "x" * (i % 7), "n": i}
        for i in range(offset, offset + n)
    ]


def user(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in SYSTEM}


def versions(docs: list[dict]) -> Counter:
    return Counter((d["id"], d["v"]) for d in docs)


@dataclass
class Committed:
    docs: list[dict]  # every exported line, parsed, in manifest order
    raw_lines: list[bytes]
    manifests: int
    runs: list[str]

    def counts(self) -> Counter:
        return versions(self.docs)


def committed(s3: Any, target: ExportTarget, *, check_verify: bool = True) -> Committed:
    """Read back every committed manifest's parts; each manifest must verify (no missing/corrupt part)."""
    manifests = CommitStore(s3, target).committed_manifests()
    docs, lines, runs = [], [], []
    for manifest in manifests:
        runs.append(manifest.run_id)
        if check_verify:
            report = verify_run(s3, target, manifest.run_id)
            assert report.ok, f"run {manifest.run_id}: {[str(m) for m in report.mismatches]}"
        for part in manifest.parts:
            extra = {"VersionId": part.version_id} if part.version_id else {}
            body = s3.get_object(Bucket=target.bucket, Key=part.key, **extra)["Body"].read()
            for line in jsonl.decompress(body, jsonl.compression_of_key(part.key)).splitlines():
                lines.append(line)
                docs.append(json.loads(line))
    return Committed(docs, lines, len(manifests), runs)


@dataclass
class World:
    """One container on the gateway double and its own S3 prefix."""

    state: Any
    cosmos_url: str
    s3: Any  # client the tests read with (straight to moto)
    session: boto3.Session
    credential: Any
    bucket: str
    s3_endpoint: str
    ca_bundle: str
    container: str = field(default_factory=lambda: f"c{uuid.uuid4().hex[:10]}")
    prefix: str = field(default_factory=lambda: f"rel/{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        self.state.create_container(DB, self.container, "/pk", 4)

    @property
    def target(self) -> ExportTarget:
        return ExportTarget(self.bucket, self.prefix, ACCOUNT, DB, self.container)

    def settings(self, **overrides: Any) -> WorkerSettings:
        values: dict[str, Any] = dict(
            identity_mode="workload",
            aws_region="us-east-1",
            azure_tenant_id=TENANT,
            azure_client_id=CLIENT,
            cosmos_endpoint=self.cosmos_url,
            cosmos_account=ACCOUNT,
            cosmos_database=DB,
            cosmos_containers=self.container,
            cosmos_tls_verify=self.ca_bundle,
            bucket=self.bucket,
            prefix=self.prefix,
            s3_endpoint=self.s3_endpoint,
            page_size=50,
            concurrency=4,
            compression="gzip",
        )
        values.update(overrides)
        return WorkerSettings(**values)

    def seed(self, docs: list[dict]) -> None:
        self.state.upsert_many(DB, self.container, docs)

    def run(
        self,
        mode: contract.RunMode = "incremental",
        *,
        s3: Any = None,
        credential: Any = None,
        stop: threading.Event | None = None,
        **overrides: Any,
    ) -> export.RunSummary:
        return export.run_export(
            self.settings(**overrides),
            mode,
            credential=credential or self.credential,
            session=self.session,
            s3=s3 or self.s3,
            stop=stop,
        )

    def committed(self, **kw: Any) -> Committed:
        return committed(self.s3, self.target, **kw)

    def checkpoint_bytes(self) -> bytes | None:
        from botocore.exceptions import ClientError

        from cosmos_export.layout import checkpoint_key

        try:
            return self.s3.get_object(Bucket=self.bucket, Key=checkpoint_key(self.target))["Body"].read()
        except ClientError:
            return None

    def all_keys(self) -> dict[str, str]:
        """key -> ETag of every object under this world's prefix (to prove nothing was written)."""
        out = {}
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for v in page.get("Versions", []):
                out[f"{v['Key']}@{v['VersionId']}"] = v["ETag"]
        return out


class WhenServed:
    """Run `action` once the gateway has answered `after` successful requests of `operation` (mid-run faults)."""

    def __init__(self, state: Any, operation: str, after: int, action: Any):
        self.state, self.operation, self.after, self.action = state, operation, after, action
        self.fired = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _ok(self) -> int:
        return self.state.stats_dict().get(self.operation, {}).get("200", 0)

    def _watch(self) -> None:
        target = self._ok() + self.after
        while not self._done.is_set():
            if self._ok() >= target:
                self.action()
                self.fired.set()
                return
            self._done.wait(0.002)

    def __enter__(self) -> "WhenServed":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
