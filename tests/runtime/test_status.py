"""`cosmos-export status` against real runs (test_export's harness: Cosmos gateway double -> moto S3).

After a snapshot, an incremental, a run killed between its manifest and its checkpoint, an orphaned run and
drill reports, every field is what the bucket holds; `--max-age` decides the exit code; nothing is written.
"""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from cosmos_export import contract, layout, status
from cosmos_export.cli import app
from cosmos_export.commit import CommitStore
from cosmos_export.contract import Env
from cosmos_export.layout import ExportTarget
from tests.runtime.test_export import DB, env, make_docs, run  # noqa: F401  (fixtures)

PREFIX = "exports/test"


class CheckpointWriteKilled(Exception):
    """The process died right after its manifest was written (the checkpoint PUT never happened)."""


class KillBeforeCheckpoint:
    """An S3 client whose checkpoint.json PUT never happens: a run killed between manifest and checkpoint."""

    def __init__(self, s3):
        self._s3 = s3

    def put_object(self, **kw):
        if kw["Key"].endswith("/checkpoint.json"):
            raise CheckpointWriteKilled("killed")
        return self._s3.put_object(**kw)

    def __getattr__(self, name):
        return getattr(self._s3, name)


class ReadOnly:
    """Records every S3 operation `status` makes; anything but a read fails the test."""

    READS = {"get_object", "get_paginator", "list_objects_v2", "list_multipart_uploads"}

    def __init__(self, s3):
        self._s3, self.calls = s3, []

    def __getattr__(self, name):
        assert name in self.READS, f"status called S3 {name}"
        self.calls.append(name)
        return getattr(self._s3, name)


def statuses(env, now=None) -> dict[str, status.ContainerStatus]:
    s3 = ReadOnly(env["s3"])
    found = status.collect(
        s3,
        bucket=env["bucket"],
        prefix=PREFIX,
        account="acct",
        database=DB,
        containers=["orders", "customers"],
        now=now,
    )
    return {s.container: s for s in found}


def manifests(env, container="orders"):
    return CommitStore(env["s3"], ExportTarget(env["bucket"], PREFIX, "acct", DB, container)).committed_manifests()


def test_every_field_after_snapshot_incremental_killed_run_orphan_and_drills(env):
    state, s3, bucket = env["state"], env["s3"], env["bucket"]
    orders = state.container(DB, "orders")
    t0 = int(time.time()) - 3 * 3600
    orders.bulk_load(make_docs(300), ts=t0)
    state.upsert_many(DB, "customers", make_docs(20, "c"))

    before = statuses(env)["orders"]
    assert (before.sequence, before.checkpoint, before.orphan_parts, before.drill) == (None, "none", 0, None)
    assert before.too_old(10**9)  # never committed: too old for any --max-age

    # 1. Snapshot.
    run(env, "snapshot")
    now = datetime.now(timezone.utc)
    snap = statuses(env, now)["orders"]
    [m1] = manifests(env)
    assert (snap.sequence, snap.run_id, snap.mode) == (1, m1.run_id, "snapshot")
    assert snap.committed_at == m1.finished_at and snap.age_seconds == round((now - m1.finished_at).total_seconds(), 3)
    assert (snap.documents, snap.bytes) == (300, m1.bytes) and m1.bytes > 0
    assert (snap.newest_ts, snap.lag_seconds) == (t0, round(now.timestamp() - t0, 3))
    assert snap.schema_version == 1
    assert (snap.checkpoint, snap.checkpoint_sequence) == ("current", 1)
    assert (snap.orphan_parts, snap.orphan_bytes, snap.orphan_runs, snap.open_uploads) == (0, 0, [], 0)
    assert snap.drill is None and snap.problems == []
    assert not snap.too_old(3600) and snap.too_old(0)

    # 2. Incremental: 15 changed documents, one with a new field (schema version 2), written later.
    t1 = t0 + 3600
    orders.bulk_load([{**d, "n": -d["n"]} for d in make_docs(14)] + [{**make_docs(1, offset=14)[0], "extra": 1}], ts=t1)
    run(env, "incremental")
    inc = statuses(env)["orders"]
    m2 = manifests(env)[-1]
    assert (inc.sequence, inc.run_id, inc.mode, inc.documents, inc.bytes) == (2, m2.run_id, "incremental", 15, m2.bytes)
    assert (inc.newest_ts, inc.schema_version, inc.checkpoint) == (t1, 2, "current")
    customers = statuses(env)["customers"]
    assert (customers.sequence, customers.documents, customers.checkpoint) == (2, 0, "current")

    # 3. A run killed after its manifest, before its checkpoint: committed, the checkpoint behind.
    orders.bulk_load(make_docs(5, offset=1000), ts=t1 + 60)
    settings = env["settings"].model_copy(update={"cosmos_containers": ("orders",)})
    with pytest.raises(Exception, match="killed"):
        run(env, "incremental", settings=settings, s3=KillBeforeCheckpoint(s3))
    killed = statuses(env)["orders"]
    m3 = manifests(env)[-1]
    assert (killed.sequence, killed.run_id, killed.documents, killed.newest_ts) == (3, m3.run_id, 5, t1 + 60)
    assert (killed.checkpoint, killed.checkpoint_sequence) == ("behind", 2)

    # 4. An orphan: a run that died long ago left a part and an open multipart upload.
    target = ExportTarget(bucket, PREFIX, "acct", DB, "orders")
    long_ago = datetime.now(timezone.utc) - timedelta(hours=5)
    dead = layout.new_run_id(long_ago)
    key = layout.part_key(
        target, run_id=dead, started_at=long_ago, feed_range_index=0, part_number=1, compression="zstd"
    )
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 1234)
    s3.create_multipart_upload(Bucket=bucket, Key=key.replace("part-00001", "part-00002"))
    orphaned = statuses(env)["orders"]
    assert (orphaned.orphan_parts, orphaned.orphan_bytes, orphaned.orphan_runs, orphaned.open_uploads) == (
        1,
        1234,
        [dead],
        1,
    )

    # 5. Drill reports: the newest one counts, whatever else lies there.
    drills = f"{target.container_prefix}/{contract.DRILLS_DIR}/"
    s3.put_object(
        Bucket=bucket,
        Key=drills + "20261201T020000000000Z.json",
        Body=json.dumps(
            {"ok": True, "drill_finished_at": "2026-12-01T02:00:00+00:00", "sequence": 1, "documents_mismatched": 0}
        ).encode(),
    )
    s3.put_object(
        Bucket=bucket,
        Key=drills + "20261202T020000000000Z.json",
        Body=json.dumps(
            {"ok": False, "drill_finished_at": "2026-12-02T02:00:00+00:00", "sequence": 2, "documents_mismatched": 3}
        ).encode(),
    )
    drilled = statuses(env)["orders"]
    assert drilled.drill == status.Drill(
        key=drills + "20261202T020000000000Z.json",
        ok=False,
        finished_at="2026-12-02T02:00:00+00:00",
        sequence=2,
        documents_mismatched=3,
    )

    # status wrote nothing: the checkpoint is still behind, the orphan still there.
    assert CommitStore(s3, target)._get(layout.checkpoint_key(target)) is not None
    assert json.loads(s3.get_object(Bucket=bucket, Key=layout.checkpoint_key(target))["Body"].read())["sequence"] == 2
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 1234

    # The table shows the same facts.
    from rich.console import Console

    console = Console(width=220, record=True, file=io.StringIO())
    console.print(status.table(list(statuses(env).values())))
    text = console.export_text()
    assert f"cosmos-export status: acct/{DB}" in text
    row = next(line for line in text.splitlines() if line.startswith("│ orders "))
    for cell in (
        "3",
        "incremental",
        "5",
        status.human_bytes(m3.bytes),
        "behind (at 2)",
        "1 part(s) 1.2 KiB, 1 upload(s)",
        "FAILED 2026-12-02 02:00",
    ):
        assert cell in row, (cell, row)


def test_an_unreadable_checkpoint_is_reported_not_raised(env):
    env["state"].upsert_many(DB, "orders", make_docs(10))
    run(env, "snapshot")
    target = ExportTarget(env["bucket"], PREFIX, "acct", DB, "orders")
    env["s3"].put_object(Bucket=env["bucket"], Key=layout.checkpoint_key(target), Body=b"{not json")
    broken = statuses(env)["orders"]
    assert broken.checkpoint == "unreadable" and broken.sequence == 1
    assert "checkpoint s3://" in broken.problems[0] and "restored from a previous version" in broken.problems[0]


@pytest.fixture()
def cli_env(env, monkeypatch):
    s = env["settings"]
    for name, value in {
        Env.AWS_REGION: "us-east-1",
        Env.AZURE_TENANT_ID: s.azure_tenant_id,
        Env.AZURE_CLIENT_ID: s.azure_client_id,
        Env.COSMOS_ENDPOINT: s.cosmos_endpoint,
        Env.COSMOS_ACCOUNT: "acct",
        Env.COSMOS_DATABASE: DB,
        Env.COSMOS_CONTAINERS: "orders,customers",
        Env.BUCKET: env["bucket"],
        Env.PREFIX: PREFIX,
        Env.S3_ENDPOINT: s.s3_endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    return env


def cosmos_export(*args):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_cli_json_and_max_age_exit_codes(cli_env):
    env = cli_env
    code, out = cosmos_export("status", "--json", "--max-age", "1h")
    assert code == 1  # nothing committed yet: every container is too old
    report = json.loads(out[: out.rindex("}") + 1])
    assert report["stale"] == ["orders", "customers"] and report["max_age_seconds"] == 3600
    assert out.rstrip().endswith("error: older than --max-age 1h (or never committed): orders, customers")

    env["state"].upsert_many(DB, "orders", make_docs(30))
    run(env, "snapshot")
    code, out = cosmos_export("status", "--json", "--max-age", "1h")
    assert code == 0, out
    report = json.loads(out)
    [orders] = [c for c in report["containers"] if c["container"] == "orders"]
    assert (orders["sequence"], orders["documents"], orders["checkpoint"]) == (1, 30, "current")
    assert datetime.fromisoformat(orders["committed_at"]) == manifests(env)[-1].finished_at
    assert report["stale"] == []

    time.sleep(1.1)
    assert cosmos_export("status", "--max-age", "1s")[0] == 1  # committed over a second ago
    code, out = cosmos_export("status", "--max-age", "2d")
    assert code == 0 and f"cosmos-export status: acct/{DB}" in out and "│ orders " in out and "│ customers " in out
    code, out = cosmos_export("status", "--max-age", "soon")
    assert code == 2 and "--max-age 'soon' is not a duration: use a positive number with s, m, h or d" in out


def test_status_needs_only_reads(env):
    env["state"].upsert_many(DB, "orders", make_docs(10))
    run(env, "snapshot")
    s3 = ReadOnly(env["s3"])
    status.collect(s3, bucket=env["bucket"], prefix=PREFIX, account="acct", database=DB, containers=["orders"])
    assert set(s3.calls) == {"get_object", "get_paginator"}  # list_objects_v2/list_multipart_uploads via paginators
    with pytest.raises(ClientError):  # and a missing bucket is an error, not an empty status
        status.collect(
            env["s3"], bucket="no-such-bucket-here", prefix=PREFIX, account="acct", database=DB, containers=["orders"]
        )
