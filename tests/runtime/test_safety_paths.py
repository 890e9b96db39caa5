"""The safety paths mutation testing found unguarded (issue 20): each test here fails on the mutated code.

Real moto S3 server throughout; where a test needs an S3 error moto does not produce (403 on a read,
500 on a write), a thin wrapper raises the exact `ClientError` botocore would, in front of the real client.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import botocore.exceptions
import pytest

from cosmos_export import jsonl, layout, schema
from cosmos_export.commit import (
    ORPHAN_SAFETY_MARGIN,
    CheckpointError,
    CommitStore,
    ConcurrentRunError,
    Manifest,
)
from cosmos_export.contract import Env
from cosmos_export.schema import SchemaTracker, next_schema
from cosmos_export.settings import SettingsError, load_settings
from cosmos_export.sink import FeedRangeSink
from cosmos_export.storage import client_config as s3_client_config


@pytest.fixture
def s3(moto_server):
    return boto3.client(
        "s3",
        endpoint_url=moto_server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=s3_client_config(max_attempts=2),
    )


@pytest.fixture
def bucket(s3):
    name = f"safety-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def target_of(bucket: str, container: str = "orders") -> layout.ExportTarget:
    return layout.ExportTarget(bucket, "exports", "acct", "db", container)


def write_run(s3, target, started: datetime, docs: list[dict], *, part_size: int = 10**9):
    run_id = layout.new_run_id(started)
    tracker = SchemaTracker()
    sink = FeedRangeSink(
        s3,
        target,
        run_id=run_id,
        started_at=started,
        feed_range="r0",
        feed_range_index=0,
        compression="gzip",
        part_size_bytes=part_size,
        kms_key_arn=None,
        schema=tracker,
        log=None,
    )
    sink.write_page(docs)
    return run_id, sink.close(), tracker


def commit_run(s3, target, started: datetime, docs: list[dict]):
    store = CommitStore(s3, target)
    loaded = store.load()
    run_id, records, tracker = write_run(s3, target, started, docs)
    previous = loaded.checkpoint.schema_ if loaded.checkpoint else None
    now = datetime.now(timezone.utc)
    manifest = Manifest(
        run_id=run_id,
        mode="snapshot",
        account=target.account,
        database=target.database,
        container=target.container,
        started_at=now,
        finished_at=now,
        parts=records,
        continuations={'{"r":0}': "c"},
        schema_previous=previous,
        schema_=next_schema(previous, tracker),
    )
    return run_id, records, store.commit(loaded, manifest)


def keys(s3, bucket: str, prefix: str = "") -> set[str]:
    found: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update(o["Key"] for o in page.get("Contents", []))
    return found


def uploads(s3, bucket: str) -> set[str]:
    return {u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}


NOW = datetime.now(timezone.utc).replace(microsecond=0)
#: A live run "in the future" so that every object written now is old enough for cleanup
#: (cleanup only touches objects last written before the live run's start minus the margin).
LIVE = NOW + timedelta(hours=1)


def live_run_id() -> str:
    return layout.new_run_id(LIVE)


# --- 1. Orphan cleanup stays inside its own container's prefix ---------------------------------


def test_cleanup_never_touches_another_containers_parts_or_uploads(s3, bucket):
    mine, theirs = target_of(bucket, "orders"), target_of(bucket, "customers")
    their_run, their_records, _ = commit_run(s3, theirs, NOW - timedelta(hours=2), [{"id": "c1"}, {"id": "c2"}])
    # An upload of theirs still open (their run is live or crashed: theirs to clean, never ours).
    their_open = layout.part_key(
        theirs,
        run_id=layout.new_run_id(NOW - timedelta(hours=2)),
        started_at=NOW,
        feed_range_index=0,
        part_number=1,
        compression="gzip",
    )
    s3.create_multipart_upload(Bucket=bucket, Key=their_open)
    my_orphan_run, my_orphans, _ = write_run(s3, mine, NOW - timedelta(hours=2), [{"id": "o1"}])

    deleted = CommitStore(s3, mine).cleanup_orphans({live_run_id()})

    assert deleted == [r.key for r in my_orphans]  # positive control: cleanup did run, on our prefix
    assert {r.key for r in their_records} <= keys(s3, bucket, theirs.data_prefix)
    assert their_open in uploads(s3, bucket)


# --- 3. The cleanup safety margin: -10 minutes, strictly before ---------------------------------


def test_cleanup_margin_keeps_runs_that_started_within_ten_minutes_of_the_live_run(s3, bucket):
    target = target_of(bucket)
    assert ORPHAN_SAFETY_MARGIN == timedelta(minutes=10)
    _, inside, _ = write_run(s3, target, LIVE - timedelta(minutes=5), [{"id": "inside"}])
    _, at_cutoff, _ = write_run(s3, target, LIVE - timedelta(minutes=10), [{"id": "at-cutoff"}])
    _, before, _ = write_run(s3, target, LIVE - timedelta(minutes=10, seconds=1), [{"id": "before"}])

    deleted = CommitStore(s3, target).cleanup_orphans({live_run_id()})

    assert deleted == [r.key for r in before]
    remaining = keys(s3, bucket, target.data_prefix)
    assert {r.key for r in inside + at_cutoff} <= remaining


def test_cleanup_keeps_objects_written_after_the_cutoff_even_of_old_runs(s3, bucket):
    target = target_of(bucket)
    _, old, _ = write_run(s3, target, NOW - timedelta(hours=3), [{"id": "old-run-new-object"}])
    # The live run started just now: the object above was written after (live start - 10 min).
    assert CommitStore(s3, target).cleanup_orphans({layout.new_run_id(NOW)}) == []
    assert {r.key for r in old} <= keys(s3, bucket, target.data_prefix)


# --- 4. A stray object under manifests/ does not end the listing ------------------------------


def test_stray_object_between_manifests_does_not_hide_later_committed_runs(s3, bucket):
    target = target_of(bucket)
    run1, _, _ = commit_run(s3, target, NOW - timedelta(hours=3), [{"id": "a"}])
    # Sorts between 0000000001.json and 0000000002.json in the listing.
    s3.put_object(Bucket=bucket, Key=f"{target.manifests_prefix}0000000001.json.bak", Body=b"{}")
    run2, records2, _ = commit_run(s3, target, NOW - timedelta(hours=2), [{"id": "b"}])

    store = CommitStore(s3, target)
    assert [m.run_id for m in store.committed_manifests()] == [run1, run2]
    store.cleanup_orphans({live_run_id()})
    assert {r.key for r in records2} <= keys(s3, bucket, target.data_prefix)


# --- 5. The checkpoint is written with its conditions ------------------------------------------


def test_checkpoint_writes_carry_if_none_match_then_if_match_the_loaded_etag(s3, bucket):
    target = target_of(bucket)
    sent: list[dict] = []

    def record(params, **_):
        if params["Key"] == layout.checkpoint_key(target):
            sent.append({k: v for k, v in params.items() if k in ("IfMatch", "IfNoneMatch")})

    s3.meta.events.register("provide-client-params.s3.PutObject", record)
    try:
        commit_run(s3, target, NOW - timedelta(hours=2), [{"id": "a"}])
        etag = CommitStore(s3, target).load().etag
        commit_run(s3, target, NOW - timedelta(hours=1), [{"id": "b"}])
    finally:
        s3.meta.events.unregister("provide-client-params.s3.PutObject", record)
    assert sent == [{"IfNoneMatch": "*"}, {"IfMatch": etag}]


def test_manifest_write_carries_if_none_match(s3, bucket):
    target = target_of(bucket)
    sent: list[dict] = []

    def record(params, **_):
        if params["Key"].startswith(target.manifests_prefix):
            sent.append({k: v for k, v in params.items() if k in ("IfMatch", "IfNoneMatch")})

    s3.meta.events.register("provide-client-params.s3.PutObject", record)
    try:
        commit_run(s3, target, NOW - timedelta(hours=2), [{"id": "a"}])
    finally:
        s3.meta.events.unregister("provide-client-params.s3.PutObject", record)
    assert sent == [{"IfNoneMatch": "*"}]


# --- 6. Error classification: only a missing key is "none", only a conflict is a lost race ----


class Failing:
    """The real client, except that one operation on keys ending with `suffix` raises `error`."""

    def __init__(self, real, operation: str, suffix: str, code: str, status: int):
        self._real, self._operation, self._suffix = real, operation, suffix
        response: Any = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        self._error = botocore.exceptions.ClientError(response, operation)
        self.calls = 0

    def __getattr__(self, name):
        method = getattr(self._real, name)
        if name != self._operation:
            return method

        def failing(**kwargs):
            if kwargs.get("Key", "").endswith(self._suffix):
                self.calls += 1
                raise self._error
            return method(**kwargs)

        return failing


def test_access_denied_on_the_checkpoint_read_is_an_error_not_a_first_run(s3, bucket):
    target = target_of(bucket)
    commit_run(s3, target, NOW - timedelta(hours=2), [{"id": "a"}])
    denied = Failing(s3, "get_object", "checkpoint.json", "AccessDenied", 403)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        CommitStore(denied, target).load()
    assert err.value.response["Error"]["Code"] == "AccessDenied" and denied.calls == 1


def test_missing_checkpoint_is_a_first_run(s3, bucket):
    assert CommitStore(s3, target_of(bucket)).load().next_sequence == 1


@pytest.mark.parametrize("code,status", [("AccessDenied", 403), ("InternalError", 500)])
def test_a_failed_manifest_write_is_not_a_lost_race(s3, bucket, code, status):
    target = target_of(bucket)
    store_s3 = Failing(s3, "put_object", "0000000001.json", code, status)
    store = CommitStore(store_s3, target)
    loaded = store.load()
    run_id, records, tracker = write_run(s3, target, NOW - timedelta(hours=1), [{"id": "a"}])
    now = datetime.now(timezone.utc)
    manifest = Manifest(
        run_id=run_id,
        mode="snapshot",
        account="acct",
        database="db",
        container="orders",
        started_at=now,
        finished_at=now,
        parts=records,
        continuations={},
        schema_previous=None,
        schema=next_schema(None, tracker),
    )
    with pytest.raises(botocore.exceptions.ClientError) as err:
        store.commit(loaded, manifest)
    assert not isinstance(err.value, ConcurrentRunError) and err.value.response["Error"]["Code"] == code
    assert keys(s3, bucket, target.manifests_prefix) == set() and store_s3.calls == 1


def test_a_conflicting_manifest_of_another_run_is_a_lost_race(s3, bucket):
    target = target_of(bucket)
    store = CommitStore(s3, target)
    loaded = store.load()
    commit_run(s3, target, NOW - timedelta(hours=2), [{"id": "winner"}])
    run_id, records, tracker = write_run(s3, target, NOW - timedelta(hours=1), [{"id": "loser"}])
    now = datetime.now(timezone.utc)
    manifest = Manifest(
        run_id=run_id,
        mode="snapshot",
        account="acct",
        database="db",
        container="orders",
        started_at=now,
        finished_at=now,
        parts=records,
        continuations={},
        schema_previous=None,
        schema=next_schema(None, tracker),
    )
    with pytest.raises(ConcurrentRunError, match="committed sequence 1 .* first"):
        store.commit(loaded, manifest)


# --- 7. The sink: a page across parts, uncompressed bytes, no write after close --------------


def test_a_page_spanning_several_parts_keeps_every_document_once_and_counts_each_part(s3, bucket):
    target = target_of(bucket)
    # 1 KB documents, 32 KiB parts (rolled every 256 KiB batch): one page of 1000 documents fills 4 parts,
    # and the new field appears in the middle of one of them.
    rng = random.Random(20)
    page = [{"id": f"d{i:04d}", "pk": i % 7, "body": rng.randbytes(500).hex()} for i in range(600)]
    page += [{"id": f"d{i:04d}", "pk": i % 7, "late": True, "body": rng.randbytes(500).hex()} for i in range(600, 1000)]
    previous = next_schema(None, {"id": ["string"], "pk": ["integer"], "body": ["string"]})
    tracker = SchemaTracker()
    run_id = layout.new_run_id(NOW)
    sink = FeedRangeSink(
        s3,
        target,
        run_id=run_id,
        started_at=NOW,
        feed_range="r0",
        feed_range_index=0,
        compression="gzip",
        part_size_bytes=32 * 1024,
        kms_key_arn=None,
        schema=tracker,
        log=None,
        previous_schema=previous,
    )
    sink.write_page(page)
    records = sink.close()
    assert len(records) == 4
    read_back: list[dict] = []
    for record in records:
        raw = s3.get_object(Bucket=bucket, Key=record.key)["Body"].read()
        plain = jsonl.decompress(raw, "gzip")
        lines = [json.loads(line) for line in plain.splitlines()]
        assert record.documents == len(lines)
        assert record.uncompressed_bytes == len(plain)
        assert record.bytes == len(raw) and record.sha256 == hashlib.sha256(raw).hexdigest()
        # Each part's schema version covers exactly its own documents' fields.
        own = SchemaTracker()
        for doc in lines:
            own.observe(doc)
        assert record.schema_version == next_schema(previous, own).version == (2 if "late" in own.fields() else 1)
        read_back.extend(lines)
    assert read_back == page
    assert [r.schema_version for r in records] == [1, 1, 2, 2]
    assert tracker.fields()["late"] == ["boolean"]


def test_write_page_after_close_is_refused(s3, bucket):
    sink = FeedRangeSink(
        s3,
        target_of(bucket),
        run_id=layout.new_run_id(NOW),
        started_at=NOW,
        feed_range="r0",
        feed_range_index=3,
        compression="zstd",
        part_size_bytes=10**6,
        kms_key_arn=None,
        schema=SchemaTracker(),
        log=None,
    )
    sink.write_page([{"id": "a"}])
    records = sink.close()
    with pytest.raises(RuntimeError, match="feed range 3 is closed"):
        sink.write_page([{"id": "b"}])
    assert sink.close() == records and len(records) == 1


# --- 8. Canonical forms and bounds ----------------------------------------------------------


def test_schema_fingerprint_is_sha256_of_the_sorted_compact_ascii_json():
    fields = {"b": ["string"], "a": ["string", "integer"], "é": ["null"]}
    canonical = '{"a":["integer","string"],"b":["string"],"\\u00e9":["null"]}'
    assert schema.fingerprint(fields) == hashlib.sha256(canonical.encode("ascii")).hexdigest()
    assert schema.fingerprint(fields) == schema.fingerprint(dict(reversed(list(fields.items()))))


@pytest.mark.parametrize(
    "where",
    ["SELECT * FROM c", "select * from c", "Where c.a = 1", "c.a = 1; DROP", "c.a = 1 -- comment", "WHERE c.a = 1"],
)
def test_query_filter_guard_refuses_whole_queries_and_comments(monkeypatch, where):
    monkeypatch.setenv(Env.SNAPSHOT_SOURCE, "query")
    with pytest.raises(SettingsError) as err:
        load_settings(identity_mode="laptop", query_filter=where, **REQUIRED)
    assert any(
        p.startswith(f"{Env.QUERY_FILTER}=") and "only the condition after WHERE" in p for p in err.value.problems
    )


@pytest.mark.parametrize("where", ["c.selected = 1", "c.whereabouts = 'x'", "c.a - 1 > 0"])
def test_query_filter_guard_accepts_conditions(monkeypatch, where):
    monkeypatch.setenv(Env.SNAPSHOT_SOURCE, "query")
    assert load_settings(identity_mode="laptop", query_filter=where, **REQUIRED).query_filter == where


REQUIRED = dict(
    cosmos_endpoint="https://acct.documents.azure.com:443/",
    cosmos_database="db",
    cosmos_containers="orders",
    bucket="export-bucket",
    aws_region="eu-west-1",
)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
    ],
)
def test_tls_verify_is_a_real_boolean(monkeypatch, value, expected):
    monkeypatch.setenv(Env.COSMOS_TLS_VERIFY, value)
    assert load_settings(identity_mode="laptop", **REQUIRED).cosmos_tls_verify is expected


@pytest.mark.parametrize(
    "field,env,low,high",
    [
        ("concurrency", Env.CONCURRENCY, 1, 64),
        ("part_size_mb", Env.PART_SIZE_MB, 5, 5120),
        ("page_size", Env.PAGE_SIZE, 1, 10000),
        ("token_duration_seconds", Env.TOKEN_DURATION_SECONDS, 60, 3600),
    ],
)
def test_settings_bounds_are_inclusive_and_exact(field, env, low, high):
    for ok in (low, high):
        assert getattr(load_settings(identity_mode="laptop", **{field: ok}, **REQUIRED), field) == ok
    for bad in (low - 1, high + 1):
        with pytest.raises(SettingsError) as err:
            load_settings(identity_mode="laptop", **{field: bad}, **REQUIRED)
        assert any(p.startswith(f"{env}='{bad}'") for p in err.value.problems), err.value.problems


def test_key_layout_widths_and_bounds():
    target = layout.ExportTarget("b", "exports/daily", "acct", "db", "orders")
    run_id = "20250304T050607Z-0123abcd"
    key = layout.part_key(
        target, run_id=run_id, started_at=NOW, feed_range_index=9999, part_number=99999, compression="zstd"
    )
    assert key.endswith(f"/run={run_id}/range=9999/part-99999.jsonl.zst")
    assert layout.part_key(
        target, run_id=run_id, started_at=NOW, feed_range_index=0, part_number=1, compression="gzip"
    ).endswith("/range=0000/part-00001.jsonl.gz")
    for index, number in ((10000, 1), (-1, 1), (0, 0), (0, 100000)):
        with pytest.raises(ValueError):
            layout.part_key(
                target, run_id=run_id, started_at=NOW, feed_range_index=index, part_number=number, compression="gzip"
            )
    assert layout.manifest_key(target, 1).endswith("/manifests/0000000001.json")
    assert layout.manifest_key(target, 9_999_999_999).endswith("/manifests/9999999999.json")
    for bad in (0, 10_000_000_000):
        with pytest.raises(ValueError, match="sequence"):
            layout.manifest_key(target, bad)


@pytest.mark.parametrize("prefix", ["a/../b", "../x", "a/./b", "x/.."])
def test_dot_segments_in_the_prefix_are_refused(prefix):
    with pytest.raises(ValueError, match="segment"):
        layout.ExportTarget("b", prefix, "acct", "db", "orders")


@pytest.mark.parametrize(
    "run_id",
    [
        "x20250304T050607Z-0123abcd",
        "20250304T050607Z-0123abcdx",
        "20250304T050607Z-0123ABCD",
        "20250304T0506Z-0123abcd",
    ],
)
def test_run_ids_are_anchored(run_id):
    with pytest.raises(ValueError, match="is not a run id"):
        layout.run_started_at(run_id)
    assert layout.run_id_of_key(f"p/data/dt=2025-03-04/run={run_id}/range=0000/part-00001.jsonl.gz") is None


def test_run_id_of_key_finds_a_well_formed_run():
    run_id = "20250304T050607Z-0123abcd"
    assert layout.run_id_of_key(f"p/data/dt=2025-03-04/run={run_id}/range=0000/part-00001.jsonl.gz") == run_id
    assert layout.run_started_at(run_id) == datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def test_checkpoint_error_is_raised_for_a_manifest_of_another_sequence(s3, bucket):
    target = target_of(bucket)
    commit_run(s3, target, NOW - timedelta(hours=2), [{"id": "a"}])
    body = json.loads(s3.get_object(Bucket=bucket, Key=layout.manifest_key(target, 1))["Body"].read())
    body["sequence"] = 7
    s3.put_object(Bucket=bucket, Key=layout.manifest_key(target, 2), Body=json.dumps(body).encode())
    with pytest.raises(CheckpointError, match="says sequence 7, its key says 2"):
        CommitStore(s3, target).load()
