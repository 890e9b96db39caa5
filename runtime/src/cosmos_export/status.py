"""`cosmos-export status`: where every container's export stands, read from the bucket alone.

Read-only by construction: unlike `CommitStore.load` it never rolls a checkpoint forward, and it calls
only these S3 APIs (IAM: s3:ListBucket, s3:GetObject, s3:ListBucketMultipartUploads, plus kms:Decrypt on
the export key for the SSE-KMS objects):

- ListObjectsV2 on ``manifests/``, ``data/`` and ``drills/`` of each container;
- GetObject of ``checkpoint.json``, of each manifest (to know which runs are committed), and of the newest
  drill report;
- ListMultipartUploads on ``data/`` (uploads a killed run left open).

The newest manifest is the last commit, even when the checkpoint has not caught up with it yet
(a run that stopped between the two writes; the next run rolls the checkpoint forward).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import ValidationError

from cosmos_export import layout
from cosmos_export.commit import Checkpoint, CheckpointError, CommitStore
from cosmos_export.contract import DRILLS_DIR

#: "current": the checkpoint is at the newest manifest. "behind": a manifest beyond it exists (committed;
#: the next run rolls the checkpoint forward). "missing": manifests but no checkpoint (same). "none":
#: nothing committed yet. "ahead": the checkpoint names a manifest that is gone (the next run refuses).
CheckpointState = Literal["current", "behind", "missing", "none", "ahead", "unreadable"]


@dataclass
class Drill:
    key: str
    ok: bool | None
    finished_at: str | None
    sequence: int | None
    documents_mismatched: int | None


@dataclass
class ContainerStatus:
    account: str
    database: str
    container: str
    sequence: int | None = None
    run_id: str | None = None
    mode: str | None = None
    committed_at: datetime | None = None
    age_seconds: float | None = None
    documents: int | None = None
    bytes: int | None = None
    newest_ts: int | None = None
    lag_seconds: float | None = None
    schema_version: int | None = None
    checkpoint: CheckpointState = "none"
    checkpoint_sequence: int | None = None
    orphan_parts: int = 0
    orphan_bytes: int = 0
    orphan_runs: list[str] = field(default_factory=list)
    open_uploads: int = 0
    drill: Drill | None = None
    problems: list[str] = field(default_factory=list)

    def too_old(self, max_age_seconds: float) -> bool:
        """Nothing committed, or the last commit is older than `max_age_seconds`."""
        return self.age_seconds is None or self.age_seconds > max_age_seconds

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["committed_at"] = self.committed_at.isoformat() if self.committed_at else None
        return out


def _list(s3: Any, bucket: str, prefix: str) -> list[dict]:
    objects: list[dict] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(page.get("Contents", []))
    return objects


def _checkpoint(s3: Any, target: layout.ExportTarget) -> tuple[Checkpoint | None, str | None]:
    try:
        body = s3.get_object(Bucket=target.bucket, Key=layout.checkpoint_key(target))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None, None
        raise
    try:
        return Checkpoint.model_validate_json(body), None
    except ValidationError as exc:
        return (
            None,
            f"checkpoint s3://{target.bucket}/{layout.checkpoint_key(target)} is not valid: "
            f"{exc.errors()[0]['msg']}; the next run refuses it until it is restored from a previous version",
        )


def _drill(s3: Any, target: layout.ExportTarget) -> tuple[Drill | None, str | None]:
    """The newest drill report (keys are UTC timestamps, so the greatest key is the newest)."""
    keys = sorted(
        o["Key"]
        for o in _list(s3, target.bucket, f"{target.container_prefix}/{DRILLS_DIR}/")
        if o["Key"].endswith(".json")
    )
    if not keys:
        return None, None
    try:
        report = json.loads(s3.get_object(Bucket=target.bucket, Key=keys[-1])["Body"].read())
    except (ValueError, UnicodeDecodeError) as exc:
        return Drill(keys[-1], None, None, None, None), f"drill report {keys[-1]} is not JSON ({exc})"
    report = report if isinstance(report, dict) else {}
    ok = report.get("ok")
    return Drill(
        key=keys[-1],
        ok=ok if isinstance(ok, bool) else None,
        finished_at=report.get("drill_finished_at"),
        sequence=report.get("sequence"),
        documents_mismatched=report.get("documents_mismatched"),
    ), None


def container_status(s3: Any, target: layout.ExportTarget, now: datetime) -> ContainerStatus:
    status = ContainerStatus(account=target.account, database=target.database, container=target.container)
    try:
        manifests = CommitStore(s3, target).committed_manifests()
    except CheckpointError as exc:
        manifests = []
        status.problems.append(str(exc))
    checkpoint, problem = _checkpoint(s3, target)
    if problem:
        status.problems.append(problem)
    last = manifests[-1] if manifests else None
    if last is not None:
        status.sequence, status.run_id, status.mode = last.sequence, last.run_id, last.mode
        status.committed_at = last.finished_at
        status.age_seconds = round((now - last.finished_at).total_seconds(), 3)
        status.documents, status.bytes = last.documents, last.bytes
        status.schema_version = last.schema_.version
        status.newest_ts = last.newest_ts
        if last.newest_ts is not None:
            status.lag_seconds = round(now.timestamp() - last.newest_ts, 3)
    status.checkpoint_sequence = checkpoint.sequence if checkpoint else None
    if problem:
        status.checkpoint = "unreadable"
    elif checkpoint is None:
        status.checkpoint = "missing" if last else "none"
    elif last is None or checkpoint.sequence > last.sequence:
        status.checkpoint = "ahead"
        status.problems.append(f"the checkpoint is at sequence {checkpoint.sequence} but no manifest of it exists")
    else:
        status.checkpoint = "current" if checkpoint.sequence == last.sequence else "behind"

    committed = {m.run_id for m in manifests}
    orphan_runs: set[str] = set()
    for obj in _list(s3, target.bucket, target.data_prefix):
        run_id = layout.run_id_of_key(obj["Key"])
        if run_id is not None and run_id not in committed:
            status.orphan_parts += 1
            status.orphan_bytes += int(obj.get("Size", 0))
            orphan_runs.add(run_id)
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=target.bucket, Prefix=target.data_prefix):
        for upload in page.get("Uploads", []):
            run_id = layout.run_id_of_key(upload["Key"])
            if run_id is not None and run_id not in committed:
                status.open_uploads += 1
                orphan_runs.add(run_id)
    status.orphan_runs = sorted(orphan_runs)
    status.drill, problem = _drill(s3, target)
    if problem:
        status.problems.append(problem)
    return status


def collect(
    s3: Any,
    *,
    bucket: str,
    prefix: str,
    account: str,
    database: str,
    containers: list[str] | tuple[str, ...],
    now: datetime | None = None,
) -> list[ContainerStatus]:
    now = now or datetime.now(timezone.utc)
    return [container_status(s3, layout.ExportTarget(bucket, prefix, account, database, c), now) for c in containers]


# --- rendering -----------------------------------------------------------------


def human_age(seconds: float | None) -> str:
    """42s, 12m05s, 3h07m, 2d04h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 0:
        return f"in {human_age(-s)}"
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _drill_cell(drill: Drill | None) -> str:
    if drill is None:
        return "-"
    verdict = {True: "passed", False: "FAILED", None: "unknown"}[drill.ok]
    try:
        when = datetime.fromisoformat(drill.finished_at or "").astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        when = drill.key.rsplit("/", 1)[-1]
    return f"{verdict} {when}"


def table(statuses: list[ContainerStatus], *, max_age_seconds: float | None = None) -> Any:
    """A rich Table of `statuses` (a row per container; old or broken rows in red)."""
    from rich.table import Table

    where = sorted({f"{s.account}/{s.database}" for s in statuses})
    t = Table(title=f"cosmos-export status: {', '.join(where)}", show_lines=False)
    for column in (
        "container",
        "seq",
        "committed (UTC)",
        "age",
        "mode",
        "docs",
        "bytes",
        "lag",
        "schema",
        "checkpoint",
        "orphans",
        "last drill",
    ):
        t.add_column(column, justify="right" if column in ("seq", "docs", "bytes", "schema") else "left", no_wrap=True)
    for s in statuses:
        old = max_age_seconds is not None and s.too_old(max_age_seconds)
        orphans = (
            ", ".join(
                [f"{s.orphan_parts} part(s) {human_bytes(s.orphan_bytes)}"] * bool(s.orphan_parts)
                + [f"{s.open_uploads} upload(s)"] * bool(s.open_uploads)
            )
            or "-"
        )
        t.add_row(
            s.container if len(where) == 1 else f"{s.account}/{s.database}/{s.container}",
            str(s.sequence or "-"),
            s.committed_at.strftime("%Y-%m-%d %H:%M:%S") if s.committed_at else "never",
            human_age(s.age_seconds),
            s.mode or "-",
            f"{s.documents:,}" if s.documents is not None else "-",
            human_bytes(s.bytes),
            human_age(s.lag_seconds),
            str(s.schema_version or "-"),
            s.checkpoint
            if s.checkpoint_sequence is None or s.checkpoint == "current"
            else f"{s.checkpoint} (at {s.checkpoint_sequence})",
            orphans,
            _drill_cell(s.drill),
            style="bold red" if old or s.problems or (s.drill and s.drill.ok is False) else None,
        )
    return t
