"""run_export end to end in-process: Cosmos gateway double (4 feed ranges) -> moto S3.

Snapshot, then changes, then incremental: the bytes in S3 decode to exactly the
documents expected, every part verifies, and an interrupted run commits nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid

import boto3
import pytest
import structlog

from cosmos_export import audit, contract, export, jsonl
from cosmos_export.commit import CommitStore
from cosmos_export.layout import ExportTarget
from cosmos_export.settings import WorkerSettings
from cosmos_export.verify import verify_run
from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
from sandbox.doubles.cosmos.rbac import RoleAssignment
from sandbox.doubles.cosmos.testing import JwtCredential, TestTokenIssuer

DB = "shop"
CONTAINERS = ("orders", "customers")
OID = "7d3c1a52-7f1e-4c7e-9a3b-0f2f6f1c2b11"
SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")


def make_docs(n: int, tag: str = "o", offset: int = 0) -> list[dict]:
    return [
        {"id": f"{tag}-{i}", "pk": f"k-{i % 53}", "n": i, "name": "Zoë" * (i % 3), "nested": {"v": [i, None]}}
        for i in range(offset, offset + n)
    ]


def user(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in SYSTEM}


@pytest.fixture()
def env(moto_server, local_ca, monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(key, value)
    session = boto3.Session(region_name="us-east-1")
    s3 = session.client("s3", endpoint_url=moto_server.url)
    bucket = f"export-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    issuer = TestTokenIssuer()
    state = CosmosGatewayState(
        "acct",
        token_verifier=issuer.verify,
        role_assignments=[RoleAssignment(OID, f"/dbs/{DB}", contract.COSMOS_DATA_ACTIONS)],
    )
    for name in CONTAINERS:
        state.create_container(DB, name)
    with serve_cosmos(state, local_ca) as served:
        settings = WorkerSettings(
            identity_mode="workload",
            aws_region="us-east-1",
            azure_tenant_id=issuer.tenant_id,
            azure_client_id="22222222-2222-3333-4444-555555555555",
            cosmos_endpoint=served.url,
            cosmos_account="acct",
            cosmos_database=DB,
            cosmos_containers=",".join(CONTAINERS),
            cosmos_tls_verify=str(local_ca.bundle_file),
            bucket=bucket,
            prefix="exports/test",
            s3_endpoint=moto_server.url,
            page_size=100,
            concurrency=3,
            compression="zstd",
        )
        yield dict(
            settings=settings, state=state, s3=s3, session=session, credential=JwtCredential(issuer, OID), bucket=bucket
        )


def run(env, mode, *, settings=None, s3=None, **kw):
    """One export run with the fixture's identity and session; `settings`/`s3` default to the fixture's."""
    return export.run_export(
        settings or env["settings"],
        mode,
        credential=env["credential"],
        session=env["session"],
        s3=s3 or env["s3"],
        **kw,
    )


def exported(env, container: str, run_id: str) -> list[dict]:
    """Every document of a committed run, decoded from the bytes in S3."""
    target = ExportTarget(env["bucket"], "exports/test", "acct", DB, container)
    manifest = next(m for m in CommitStore(env["s3"], target).committed_manifests() if m.run_id == run_id)
    docs: list[dict] = []
    for part in manifest.parts:
        body = env["s3"].get_object(Bucket=env["bucket"], Key=part.key)["Body"].read()
        docs.extend(json.loads(line) for line in jsonl.decompress(body, "zstd").splitlines())
    assert verify_run(env["s3"], target, run_id).ok
    return docs


def test_snapshot_then_incremental(env):
    state = env["state"]
    orders, customers = make_docs(1300), make_docs(250, "c")
    state.upsert_many(DB, "orders", orders)
    state.upsert_many(DB, "customers", customers)

    first = run(env, "snapshot")
    assert [c.container for c in first.containers] == list(CONTAINERS)
    assert [c.feed_ranges for c in first.containers] == [4, 4]
    snap = {c.container: c for c in first.containers}
    got = exported(env, "orders", snap["orders"].run_id)
    assert sorted((user(d) for d in got), key=lambda d: d["n"]) == orders  # every doc, once, byte-exact JSON
    assert snap["orders"].documents == 1300 and snap["customers"].documents == 250
    assert snap["orders"].sequence == 1 and snap["orders"].request_charge > 0

    # Changes between runs: updates, inserts, and a split of a physical partition.
    changed = [{**d, "n": -d["n"]} for d in orders[:40]] + make_docs(30, offset=5000)
    state.upsert_many(DB, "orders", changed)
    state.split(DB, "orders")
    second = run(env, "incremental")
    inc = {c.container: c for c in second.containers}
    assert inc["orders"].mode == "incremental" and inc["orders"].sequence == 2
    assert sorted((user(d) for d in exported(env, "orders", inc["orders"].run_id)), key=lambda d: d["id"]) == sorted(
        changed, key=lambda d: d["id"]
    )
    assert inc["customers"].documents == 0  # nothing changed there: committed, empty

    # Nothing changed: the next incremental is empty but still advances the sequence.
    third = run(env, "incremental")
    assert [c.documents for c in third.containers] == [0, 0]
    assert [c.sequence for c in third.containers] == [3, 3]


def test_interrupted_run_commits_nothing_and_is_redone(env):
    state = env["state"]
    docs = make_docs(800)
    state.upsert_many(DB, "orders", docs)
    stop = threading.Event()
    stop.set()  # SIGTERM before the first page
    with pytest.raises(export.ExportInterrupted) as err:
        run(env, "snapshot", stop=stop)
    assert "nothing was committed" in str(err.value)
    target = ExportTarget(env["bucket"], "exports/test", "acct", DB, "orders")
    assert CommitStore(env["s3"], target).load().checkpoint is None
    summary = run(env, "incremental")  # no checkpoint yet: runs a snapshot
    assert summary.containers[0].mode == "snapshot" and summary.containers[0].documents == 800


@pytest.mark.parametrize("update", [{"snapshot_source": "query"}, {"change_feed_mode": "AllVersionsAndDeletes"}])
def test_stop_while_taking_the_feeds_now_is_an_interruption_not_a_failure(env, update):
    """These snapshots read the change feed's "now" first; a SIGTERM there stops cleanly (exit 143 in the CLI)."""
    env["state"].upsert_many(DB, "orders", make_docs(200))
    settings = env["settings"].model_copy(update={"cosmos_containers": ("orders",), **update})
    stop = threading.Event()
    stop.set()
    with pytest.raises(export.ExportInterrupted) as err:
        run(env, "snapshot", settings=settings, stop=stop)
    assert "nothing was committed" in str(err.value)
    assert env["s3"].list_objects_v2(Bucket=env["bucket"]).get("KeyCount", 0) == 0


def test_consistency_below_minimum_refuses_before_transfer(env):
    env["state"].consistency = "Eventual"
    with pytest.raises(export.ExportError) as err:
        run(env, "snapshot")
    assert str(err.value).startswith("account consistency Eventual is weaker than the required minimum Session")
    assert env["s3"].list_objects_v2(Bucket=env["bucket"]).get("KeyCount", 0) == 0


@pytest.fixture()
def json_logs():
    audit.configure_logging("INFO")
    yield
    structlog.reset_defaults()
    logging.basicConfig(force=True)


def test_audit_logs_one_line_per_page_and_never_a_token(env, capsys, json_logs):
    env["state"].upsert_many(DB, "orders", make_docs(450))
    run(env, "snapshot", log=audit.get_logger())
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    pages = [x for x in lines if x["event"] == "cosmos_page" and x["container"] == "orders"]
    assert sum(p["items"] for p in pages) == 450
    assert all(p["activity_id"] and p["request_charge"] > 0 for p in pages)
    assert any(x["event"] == "export_done" and x["documents"] == 450 for x in lines)
    assert "eyJ" not in out  # no JWT (header starts with eyJ) anywhere


def test_filtered_query_snapshot_then_incremental_from_the_now_taken_before(env):
    state = env["state"]
    docs = make_docs(600)
    state.upsert_many(DB, "orders", docs)
    settings = env["settings"].model_copy(
        update={"cosmos_containers": ("orders",), "snapshot_source": "query", "query_filter": "c.n >= 450"}
    )
    snap = run(env, "snapshot", settings=settings)
    [result] = snap.containers
    assert result.mode == "query-snapshot" and result.feed_ranges == 4
    assert sorted((user(d) for d in exported(env, "orders", result.run_id)), key=lambda d: d["n"]) == docs[450:]

    with pytest.raises(export.ExportError) as err:  # the change feed cannot apply the filter
        run(env, "incremental", settings=settings)
    assert str(err.value).startswith("EXPORT_QUERY_FILTER is set but an incremental run reads the change feed")

    # Without the filter, the next incremental starts where the snapshot's "now" continuations were taken.
    changed = [{**docs[3], "n": -3}]
    state.upsert_many(DB, "orders", changed)
    plain = settings.model_copy(update={"query_filter": None, "snapshot_source": "changefeed"})
    inc = run(env, "incremental", settings=plain)
    assert [user(d) for d in exported(env, "orders", inc.containers[0].run_id)] == changed


def seeded_all_versions(env, count: int = 300):
    """The double recording every version, `count` documents in "orders", settings for AllVersionsAndDeletes."""
    state = env["state"]
    state.record_all_versions = True
    docs = make_docs(count)
    state.upsert_many(DB, "orders", docs)
    settings = env["settings"].model_copy(
        update={"cosmos_containers": ("orders",), "change_feed_mode": "AllVersionsAndDeletes"}
    )
    return state, docs, settings


def test_all_versions_and_deletes_captures_deletes(env):
    state, docs, settings = seeded_all_versions(env)
    snap = run(env, "snapshot", settings=settings)  # AVAD cannot start at Beginning: now, then current docs
    assert snap.containers[0].documents == 300
    state.delete(DB, "orders", "o-7", "k-7")
    state.upsert(DB, "orders", {**docs[8], "n": 88})
    state.upsert(DB, "orders", {**docs[8], "n": 89})
    inc = run(env, "incremental", settings=settings)
    changes = exported(env, "orders", inc.containers[0].run_id)
    summary = sorted(
        (
            c["metadata"]["operationType"],
            c["metadata"]["lsn"],
            c["current"].get("n"),
            c["current"].get("id") or c["metadata"].get("id"),
        )
        for c in changes
    )
    assert [(op, n, doc_id) for op, _, n, doc_id in summary] == [
        ("delete", None, "o-7"),
        ("replace", 88, "o-8"),
        ("replace", 89, "o-8"),
    ]  # every version and the delete


@pytest.mark.parametrize("priority", [None, "Low", "High"])
@pytest.mark.parametrize("snapshot_source", ["changefeed", "query"])
def test_priority_level_header_is_sent_only_when_configured(env, priority, snapshot_source):
    """EXPORT_PRIORITY=Low puts every Cosmos read at low priority (priority-based execution); unset sends nothing."""
    state = env["state"]
    docs = make_docs(450)
    state.upsert_many(DB, "orders", docs)
    settings = env["settings"].model_copy(
        update={"cosmos_containers": ("orders",), "priority": priority, "snapshot_source": snapshot_source}
    )
    snap = run(env, "snapshot", settings=settings)
    state.upsert_many(DB, "orders", make_docs(20, offset=900))
    inc = run(env, "incremental", settings=settings)
    assert (snap.containers[0].documents, inc.containers[0].documents) == (450, 20)
    reads = ["changefeed.read"] + (["query"] if snapshot_source == "query" else [])
    for operation in reads:
        levels = state.priority_levels(operation)
        assert sum(levels.values()) >= 4, (operation, levels)  # at least one request per feed range
        assert set(levels) == {priority}, (operation, levels)  # every one of them, and nothing else


def test_all_versions_and_deletes_exports_every_version_and_delete_exactly(env):
    """AllVersionsAndDeletes through the double: each write since the last run is one line, in LSN order per range,
    with its own image (intermediate versions included) and each delete with its id and partition key."""
    state, docs, settings = seeded_all_versions(env)
    snap = run(env, "snapshot", settings=settings)
    assert (
        sorted((user(d) for d in exported(env, "orders", snap.containers[0].run_id)), key=lambda d: d["n"]) == docs
    )  # the snapshot: current versions, LatestVersion shape

    # (operation, id, partition key, user fields of the image or None for a delete), in the order written.
    expected: list[tuple[str, str, str, dict | None]] = []

    def upsert(doc: dict, operation: str) -> None:
        state.upsert(DB, "orders", doc)
        expected.append((operation, doc["id"], doc["pk"], doc))

    def delete(doc: dict) -> None:
        assert state.delete(DB, "orders", doc["id"], doc["pk"])
        expected.append(("delete", doc["id"], doc["pk"], None))

    for step in (1, 2, 3):  # three versions of the same documents: every intermediate one is exported
        for doc in docs[10:16]:
            upsert({**doc, "n": doc["n"] * 10 + step, "step": step}, "replace")
    for doc in docs[20:25]:
        delete(doc)
    fresh = make_docs(4, tag="new", offset=7000)
    for doc in fresh:  # created, changed, deleted within one run: all three lines
        upsert(doc, "create")
        upsert({**doc, "n": -1}, "replace")
        delete(doc)
    delete(docs[30])  # deleted and created again with the same id
    upsert({**docs[30], "reborn": True}, "create")

    inc = run(env, "incremental", settings=settings)
    assert inc.containers[0].documents == len(expected)
    target = ExportTarget(env["bucket"], "exports/test", "acct", DB, "orders")
    manifest = next(
        m for m in CommitStore(env["s3"], target).committed_manifests() if m.run_id == inc.containers[0].run_id
    )
    lines: dict[str, list[bytes]] = {}
    for part in manifest.parts:
        body = env["s3"].get_object(Bucket=env["bucket"], Key=part.key)["Body"].read()
        lines.setdefault(part.feed_range, []).extend(jsonl.decompress(body, "zstd").splitlines())
    changes = []
    for feed_range, raw in lines.items():
        parsed = [json.loads(line) for line in raw]
        assert [jsonl.dumps_line(p).encode() for p in parsed] == raw  # canonical bytes, nothing re-encoded
        lsns = [c["metadata"]["lsn"] for c in parsed]
        assert lsns == sorted(set(lsns)), feed_range  # each change once, in LSN order within its range
        changes.extend(parsed)
    got = []
    for change in changes:
        meta, current = change["metadata"], change["current"]
        if meta["operationType"] == "delete":
            assert current == {} and "previousImageLSN" in meta
            got.append(("delete", meta["id"], meta["partitionKey"]["pk"], None))
        else:
            got.append((meta["operationType"], current["id"], current["pk"], user(current)))

    def order(event: tuple) -> tuple:
        return (event[1], json.dumps(event[3], sort_keys=True), event[0])

    assert sorted(got, key=order) == sorted(expected, key=order)
    # Within one document, versions and deletes come in the order they were written.
    for doc_id in {e[1] for e in expected}:
        assert [e for e in got if e[1] == doc_id] == [e for e in expected if e[1] == doc_id], doc_id
    assert verify_run(env["s3"], target, inc.containers[0].run_id).ok
    # Nothing changed since: the next incremental is empty (no change committed twice).
    assert run(env, "incremental", settings=settings).containers[0].documents == 0


def test_unversioned_bucket_works_end_to_end(env):
    """The stack's bucket is versioned, but a user's own unversioned bucket must work too (no VersionId=null)."""
    state, s3 = env["state"], env["s3"]
    bucket = f"plain-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    docs = make_docs(700)
    state.upsert_many(DB, "orders", docs)
    settings = env["settings"].model_copy(update={"cosmos_containers": ("orders",), "bucket": bucket})
    snap = run(env, "snapshot", settings=settings, s3=s3)
    changed = [{**d, "n": -d["n"]} for d in docs[:25]]
    state.upsert_many(DB, "orders", changed)
    inc = run(env, "incremental", settings=settings, s3=s3)
    target = ExportTarget(bucket, "exports/test", "acct", DB, "orders")
    manifests = CommitStore(s3, target).committed_manifests()
    assert [m.run_id for m in manifests] == [snap.containers[0].run_id, inc.containers[0].run_id]
    got = []
    for manifest, expected in zip(manifests, (docs, changed)):
        assert manifest.parts and all(p.version_id is None for p in manifest.parts)
        assert verify_run(s3, target, manifest.run_id).ok
        lines = [
            json.loads(line)
            for p in manifest.parts
            for line in jsonl.decompress(s3.get_object(Bucket=bucket, Key=p.key)["Body"].read(), "zstd").splitlines()
        ]
        assert sorted((user(d) for d in lines), key=lambda d: d["id"]) == sorted(expected, key=lambda d: d["id"])
        got.extend(lines)
    assert len(got) == 725


def test_new_field_bumps_the_schema_version_in_manifest_checkpoint_and_tags(env):
    state, s3 = env["state"], env["s3"]
    docs = make_docs(200)
    state.upsert_many(DB, "orders", docs)
    settings = env["settings"].model_copy(update={"cosmos_containers": ("orders",)})
    target = ExportTarget(env["bucket"], "exports/test", "acct", DB, "orders")
    store = CommitStore(s3, target)
    run(env, "snapshot", settings=settings, s3=s3)
    state.upsert_many(DB, "orders", [{**docs[1], "coupon": {"code": "X1"}}, {**docs[2], "n": "two"}])
    run(env, "incremental", settings=settings, s3=s3)
    state.upsert_many(DB, "orders", [{**docs[3], "n": 33}])  # known paths and types only
    run(env, "incremental", settings=settings, s3=s3)
    m1, m2, m3 = store.committed_manifests()
    assert (m1.schema_.version, m1.schema_previous) == (1, None)
    assert m2.schema_previous == m1.schema_ and m2.schema_.version == 2
    assert m2.schema_.fingerprint != m1.schema_.fingerprint
    assert m2.schema_.fields["coupon.code"] == ["string"] and m2.schema_.fields["n"] == ["integer", "string"]
    assert m3.schema_previous == m3.schema_ == m2.schema_  # nothing new: same version, same fingerprint
    assert store.load().checkpoint.schema_ == m3.schema_
    for part in m2.parts:
        tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=env["bucket"], Key=part.key)["TagSet"]}
        assert tags[contract.Meta.SCHEMA_VERSION] == str(part.schema_version)
    assert m2.parts and all(p.schema_version == 2 for p in m2.parts)  # each part holds one of the new shapes


def test_object_written_log_line_per_part_matches_the_manifest(env, capsys, json_logs):
    env["state"].upsert_many(DB, "orders", make_docs(450))
    settings = env["settings"].model_copy(update={"cosmos_containers": ("orders",)})
    summary = run(env, "snapshot", settings=settings, log=audit.get_logger())
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    written = {x["key"]: x for x in lines if x["event"] == "object_written"}
    target = ExportTarget(env["bucket"], "exports/test", "acct", DB, "orders")
    (manifest,) = CommitStore(env["s3"], target).committed_manifests()
    assert manifest.run_id == summary.containers[0].run_id
    assert set(written) == {p.key for p in manifest.parts}
    for part in manifest.parts:
        line = written[part.key]
        assert (line["version_id"], line["bytes"], line["docs"], line["sha256"]) == (
            part.version_id,
            part.bytes,
            part.documents,
            part.sha256,
        )
    done = [x for x in lines if x["event"] == "export_done"]
    assert len(done) == 1 and done[0]["documents"] == 450 and done[0]["bytes"] == manifest.bytes


def test_next_run_deletes_parts_and_aborts_uploads_of_an_old_uncommitted_run(env):
    """A run killed long ago left a part and an open multipart upload: the next run removes both, and only those."""
    from datetime import datetime, timedelta, timezone

    from cosmos_export import layout

    state, s3, bucket = env["state"], env["s3"], env["bucket"]
    state.upsert_many(DB, "orders", make_docs(120))
    settings = env["settings"].model_copy(update={"cosmos_containers": ("orders",)})
    target = ExportTarget(bucket, "exports/test", "acct", DB, "orders")
    run(env, "snapshot", settings=settings, s3=s3)
    long_ago = datetime.now(timezone.utc) - timedelta(hours=3)
    dead = layout.new_run_id(long_ago)
    key = layout.part_key(
        target, run_id=dead, started_at=long_ago, feed_range_index=0, part_number=1, compression="zstd"
    )
    s3.put_object(Bucket=bucket, Key=key, Body=b"partial")
    upload_key = key.replace("part-00001", "part-00002")
    s3.create_multipart_upload(Bucket=bucket, Key=upload_key)
    # Parts must be older than the run by the clock-skew margin: the next run happens an hour from now.
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    run(env, "incremental", settings=settings, s3=s3, clock=lambda: later)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=target.data_prefix).get("Contents", [])}
    committed_keys = {p.key for m in CommitStore(s3, target).committed_manifests() for p in m.parts}
    assert key not in keys and keys == committed_keys and committed_keys
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=target.data_prefix).get("Uploads", [])
    assert upload_key not in {u["Key"] for u in uploads}


def test_progress_bar_on_a_terminal_has_the_snapshot_total_for_its_eta(env, monkeypatch):
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    screens: list[tuple[int | None, Tty]] = []
    real = audit.Progress

    def on_terminal(description, total=None, stream=None):
        screen = Tty()
        screens.append((total, screen))
        return real(description, total=total, stream=screen)

    monkeypatch.setattr(audit, "progress_wanted", lambda stream=None: True)
    monkeypatch.setattr(audit, "Progress", on_terminal)
    env["state"].upsert_many(DB, "orders", make_docs(640))
    settings = env["settings"].model_copy(update={"cosmos_containers": ("orders",)})
    run(env, "snapshot", settings=settings)
    env["state"].upsert_many(DB, "orders", make_docs(5, offset=640))
    run(env, "incremental", settings=settings)
    (snap_total, snap_screen), (inc_total, inc_screen) = screens
    assert snap_total == 640 and "640/640" in snap_screen.getvalue()  # total known: rich computes the ETA
    assert inc_total is None and "5" in inc_screen.getvalue()  # a delta's size is unknown: rate only


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_feed_ranges_are_read_in_parallel_up_to_the_concurrency(env, concurrency):
    """EXPORT_CONCURRENCY feed ranges at once, never more (the double holds each change-feed request 0.3 s)."""
    state = env["state"]
    docs = make_docs(450)
    state.upsert_many(DB, "orders", docs)
    state.response_delay["changefeed.read"] = 0.3
    settings = env["settings"].model_copy(update={"cosmos_containers": ("orders",), "concurrency": concurrency})
    summary = run(env, "snapshot", settings=settings)
    assert summary.containers[0].feed_ranges == 4
    assert (
        sorted((user(d) for d in exported(env, "orders", summary.containers[0].run_id)), key=lambda d: d["n"]) == docs
    )
    assert state.max_in_flight["changefeed.read"] == concurrency
