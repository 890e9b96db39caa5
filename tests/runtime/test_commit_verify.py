"""Commit protocol and verify against a real moto S3 server (which enforces If-None-Match and If-Match)."""

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import botocore.exceptions
import pytest

from cosmos_export import layout
from cosmos_export.commit import (
    Checkpoint,
    CheckpointError,
    CommitStore,
    ConcurrentRunError,
    Manifest,
)
from cosmos_export.schema import SchemaTracker, next_schema
from cosmos_export.sink import FeedRangeSink
from cosmos_export.storage import client_config as s3_client_config
from cosmos_export.verify import RunNotCommittedError, verify_run


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
def target(s3):
    bucket = f"commit-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return layout.ExportTarget(bucket, "exports", "acct", "db", "orders")


def run_parts(s3, target, started, docs, index=0):
    run_id = layout.new_run_id(started)
    schema = SchemaTracker()
    sink = FeedRangeSink(
        s3,
        target,
        run_id=run_id,
        started_at=started,
        feed_range=f"r{index}",
        feed_range_index=index,
        compression="gzip",
        part_size_bytes=10**9,
        kms_key_arn=None,
        schema=schema,
        log=None,
    )
    sink.write_page(docs)
    return run_id, sink.close(), schema


def manifest_for(target, run_id, records, schema, previous=None, continuation="c1"):
    now = datetime.now(timezone.utc)
    new = next_schema(previous.schema_ if previous else None, schema)
    return Manifest(
        run_id=run_id,
        mode="snapshot",
        account=target.account,
        database=target.database,
        container=target.container,
        started_at=now,
        finished_at=now,
        parts=records,
        continuations={'{"r":0}': continuation},
        schema_previous=previous.schema_ if previous else None,
        schema=new,
        timings={"read_s": 1.0},
    )


def test_moto_enforces_conditional_puts(s3, target):
    etag = s3.put_object(Bucket=target.bucket, Key="k", Body=b"1", IfNoneMatch="*")["ETag"]
    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"0000"'}):
        with pytest.raises(botocore.exceptions.ClientError) as err:
            s3.put_object(Bucket=target.bucket, Key="k", Body=b"2", **condition)
        assert err.value.response["Error"]["Code"] == "PreconditionFailed"
    s3.put_object(Bucket=target.bucket, Key="k", Body=b"3", IfMatch=etag)
    assert s3.get_object(Bucket=target.bucket, Key="k")["Body"].read() == b"3"


def test_commit_writes_manifest_then_checkpoint(s3, target):
    store = CommitStore(s3, target)
    loaded = store.load()
    assert loaded.checkpoint is None and loaded.etag is None
    run_id, records, schema = run_parts(s3, target, datetime.now(timezone.utc), [{"id": "a"}, {"id": "b", "n": 1}])
    cp = store.commit(loaded, manifest_for(target, run_id, records, schema))
    assert (cp.sequence, cp.run_id, cp.continuations) == (1, run_id, {'{"r":0}': "c1"})
    body = json.loads(
        s3.get_object(Bucket=target.bucket, Key="exports/acct/db/orders/manifests/0000000001.json")["Body"].read()
    )
    assert body["sequence"] == 1 and body["format_version"] == 3 and body["run_id"] == run_id
    assert body["parts"][0]["documents"] == 2 and body["parts"][0]["sha256"] == records[0].sha256
    assert (
        body["parts"][0]["bytes"] == records[0].bytes
        and body["schema"]["version"] == 1
        and body["schema_previous"] is None
    )
    assert body["schema"]["fields"] == {"id": ["string"], "n": ["integer"]}
    stored = json.loads(
        s3.get_object(Bucket=target.bucket, Key="exports/acct/db/orders/checkpoint.json")["Body"].read()
    )
    assert stored["sequence"] == 1 and stored["manifest_key"] == "exports/acct/db/orders/manifests/0000000001.json"
    # Second run: same schema -> same version, checkpoint moved with If-Match.
    loaded = store.load()
    assert loaded.checkpoint.sequence == 1 and loaded.etag
    run2, rec2, sch2 = run_parts(s3, target, datetime.now(timezone.utc), [{"id": "c", "n": 2}])
    cp2 = store.commit(loaded, manifest_for(target, run2, rec2, sch2, previous=loaded.checkpoint, continuation="c2"))
    assert cp2.sequence == 2 and cp2.schema_.version == 1
    assert [m.run_id for m in store.committed_manifests()] == [run_id, run2]


@pytest.mark.parametrize("threaded", [False, True])
def test_two_commits_from_one_state_exactly_one_wins(s3, target, threaded):
    a_store, b_store = CommitStore(s3, target), CommitStore(s3, target)
    a_loaded, b_loaded = a_store.load(), b_store.load()
    now = datetime.now(timezone.utc)
    ma = manifest_for(target, *run_parts(s3, target, now, [{"id": "a"}], 0))
    mb = manifest_for(target, *run_parts(s3, target, now, [{"id": "b"}], 1))
    results = {}

    def go(name, store, loaded, manifest):
        try:
            results[name] = store.commit(loaded, manifest)
        except ConcurrentRunError as exc:
            results[name] = exc

    jobs = [("a", a_store, a_loaded, ma), ("b", b_store, b_loaded, mb)]
    if threaded:
        threads = [threading.Thread(target=go, args=job) for job in jobs]
        [t.start() for t in threads]
        [t.join() for t in threads]
    else:
        [go(*job) for job in jobs]
    winners = [n for n, r in results.items() if isinstance(r, Checkpoint)]
    losers = [r for r in results.values() if isinstance(r, ConcurrentRunError)]
    assert len(winners) == 1 and len(losers) == 1
    loser_run = mb.run_id if winners == ["a"] else ma.run_id
    assert str(losers[0]) == (
        f"another export run committed sequence 1 for acct/db/orders first; run {loser_run}'s parts are left "
        "uncommitted and will be cleaned up; rerun to export the remaining changes"
    )
    cp = CommitStore(s3, target).load().checkpoint
    assert cp.sequence == 1 and cp.run_id == results[winners[0]].run_id
    assert [m.run_id for m in CommitStore(s3, target).committed_manifests()] == [cp.run_id]


def test_roll_forward_after_crash_between_manifest_and_checkpoint(s3, target):
    store = CommitStore(s3, target)
    first = store.commit(
        store.load(), manifest_for(target, *run_parts(s3, target, datetime.now(timezone.utc), [{"id": "a"}]))
    )
    # "Crash": a run writes manifest 2 but dies before moving the checkpoint.
    run2, rec2, sch2 = run_parts(s3, target, datetime.now(timezone.utc), [{"id": "b"}])
    m2 = manifest_for(target, run2, rec2, sch2, previous=first, continuation="after-crash").model_copy(
        update={"sequence": 2}
    )
    s3.put_object(
        Bucket=target.bucket,
        Key=layout.manifest_key(target, 2),
        Body=m2.model_dump_json(by_alias=True),
        IfNoneMatch="*",
    )
    loaded = store.load()
    assert loaded.checkpoint.sequence == 2 and loaded.checkpoint.run_id == run2
    assert loaded.checkpoint.continuations == {'{"r":0}': "after-crash"}
    stored = json.loads(s3.get_object(Bucket=target.bucket, Key=layout.checkpoint_key(target))["Body"].read())
    assert stored["sequence"] == 2
    # The next run continues at 3; another run still holding the pre-crash state cannot commit 2 again.
    late_run = layout.new_run_id(datetime.now(timezone.utc))
    with pytest.raises(ConcurrentRunError, match="committed sequence 2"):
        from cosmos_export.commit import LoadedState

        store.commit(LoadedState(first, "stale"), m2.model_copy(update={"run_id": late_run}))
    assert (
        json.loads(s3.get_object(Bucket=target.bucket, Key=layout.manifest_key(target, 2))["Body"].read())["run_id"]
        == run2
    )


def test_commit_whose_manifest_is_already_ours_carries_on_to_the_checkpoint(s3, target):
    """The manifest PUT was applied but its response lost: the retry's 412 is our own write, not a lost race."""
    store = CommitStore(s3, target)
    loaded = store.load()
    run_id, records, schema = run_parts(s3, target, datetime.now(timezone.utc), [{"id": "a"}])
    manifest = manifest_for(target, run_id, records, schema).model_copy(update={"sequence": 1})
    # What the first (applied) attempt left behind before its response was lost.
    s3.put_object(
        Bucket=target.bucket,
        Key=layout.manifest_key(target, 1),
        Body=manifest.model_dump_json(by_alias=True),
        IfNoneMatch="*",
    )
    checkpoint = store.commit(loaded, manifest)
    assert (checkpoint.sequence, checkpoint.run_id) == (1, run_id)
    stored = json.loads(s3.get_object(Bucket=target.bucket, Key=layout.checkpoint_key(target))["Body"].read())
    assert (stored["sequence"], stored["run_id"]) == (1, run_id)
    assert len(s3.list_object_versions(Bucket=target.bucket, Prefix=layout.manifest_key(target, 1))["Versions"]) == 1


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"{not json", "is not valid JSON"),
        (
            json.dumps({"format_version": 1, "sequence": 1}).encode(),
            "is not a valid checkpoint (account: Field required",
        ),
        (None, "belongs to acct/db/customers, not acct/db/orders"),
        (
            json.dumps({"format_version": 99}).encode(),
            "has format_version 99, newer than this worker's 3; it was left unchanged: upgrade the worker image",
        ),
    ],
)
def test_bad_checkpoint_is_refused_and_left_unchanged(s3, target, body, problem):
    key = layout.checkpoint_key(target)
    if body is None:
        other = Checkpoint(
            account="acct",
            database="db",
            container="customers",
            sequence=1,
            run_id="r",
            mode="snapshot",
            manifest_key="m",
            continuations={},
            schema=next_schema(None, {}),
            committed_at=datetime.now(timezone.utc),
        )
        body = other.model_dump_json(by_alias=True).encode()
    s3.put_object(Bucket=target.bucket, Key=key, Body=body)
    store = CommitStore(s3, target)
    with pytest.raises(CheckpointError) as err:
        store.load()
    assert f"s3://{target.bucket}/{key}" in str(err.value) and problem in str(err.value)
    assert s3.get_object(Bucket=target.bucket, Key=key)["Body"].read() == body
    assert len(s3.list_object_versions(Bucket=target.bucket, Prefix=key)["Versions"]) == 1


def test_cleanup_orphans_deletes_only_old_uncommitted_runs(s3, target):
    store = CommitStore(s3, target)
    old = datetime.now(timezone.utc) - timedelta(hours=2)
    committed_run, records, schema = run_parts(s3, target, old, [{"id": "a"}], 0)
    store.commit(store.load(), manifest_for(target, committed_run, records, schema))
    orphan_run, orphan_records, _ = run_parts(s3, target, old, [{"id": "lost"}], 1)
    # An old run's unfinished upload, too.
    orphan_upload_key = layout.part_key(
        target, run_id=orphan_run, started_at=old, feed_range_index=2, part_number=1, compression="gzip"
    )
    s3.create_multipart_upload(Bucket=target.bucket, Key=orphan_upload_key)
    # Object timestamps come from moto's clock (now), so the current run "started" after them.
    current = layout.new_run_id(datetime.now(timezone.utc) + timedelta(minutes=30))
    newer_run, newer_records, _ = run_parts(
        s3, target, datetime.now(timezone.utc) + timedelta(hours=1), [{"id": "live"}], 3
    )
    deleted = store.cleanup_orphans({current})
    assert deleted == [r.key for r in orphan_records]
    remaining = {o["Key"] for o in s3.list_objects_v2(Bucket=target.bucket, Prefix=target.data_prefix)["Contents"]}
    assert remaining == {records[0].key, newer_records[0].key}
    assert s3.list_multipart_uploads(Bucket=target.bucket).get("Uploads", []) == []
    # Parts written after the live run started are never touched, even if their run id is older.
    assert store.cleanup_orphans({layout.new_run_id(datetime.now(timezone.utc) - timedelta(hours=1))}) == []
    with pytest.raises(ValueError, match="keep_run_ids is empty"):
        store.cleanup_orphans(set())


def test_verify_passes_then_catches_tampering(s3, target):
    store = CommitStore(s3, target)
    docs = [{"id": str(i), "v": "x" * 50} for i in range(100)]
    run_id, records, schema = run_parts(s3, target, datetime.now(timezone.utc), docs)
    store.commit(store.load(), manifest_for(target, run_id, records, schema))
    report = verify_run(s3, target, run_id)
    assert report.ok and report.parts_checked == 1 and report.documents == 100 and report.bytes == records[0].bytes
    # Tamper: overwrite the part's current version with different, valid content (and drop the manifest's version pin).
    import gzip

    fake = gzip.compress(b'{"id":"evil"}\n')
    body = json.loads(s3.get_object(Bucket=target.bucket, Key=layout.manifest_key(target, 1))["Body"].read())
    body["parts"][0]["version_id"] = None
    s3.put_object(Bucket=target.bucket, Key=layout.manifest_key(target, 1), Body=json.dumps(body))
    s3.put_object(Bucket=target.bucket, Key=records[0].key, Body=fake)
    report = verify_run(s3, target, run_id)
    assert not report.ok
    found = {(m.key, m.check): (m.expected, m.actual) for m in report.mismatches}
    import hashlib

    assert found[(records[0].key, "bytes")] == (str(records[0].bytes), str(len(fake)))
    assert found[(records[0].key, "sha256")] == (records[0].sha256, hashlib.sha256(fake).hexdigest())
    assert found[(records[0].key, "documents")] == ("100", "1")
    assert found[(records[0].key, "tag:document-count")] == ("100", "None")
    with pytest.raises(RunNotCommittedError, match="run nope has no committed manifest"):
        verify_run(s3, target, "nope")
