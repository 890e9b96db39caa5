"""materialize: the state at every committed sequence equals the source container's state at that point.

Real servers on loopback (the Cosmos gateway double with 4 feed ranges, moto S3): exports are run with
run_export, then materialized, then compared with the double's own documents as they were when each run
committed (bodies less system properties, compared as parsed JSON and as canonical bytes).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from cosmos_export import contract, jsonl, materialize
from cosmos_export.commit import CommitStore, ContainerDefinition
from cosmos_export.layout import ExportTarget
from tests.runtime.test_export import DB, env, make_docs, run, seeded_all_versions, user  # noqa: F401  (fixture)


def target(env, container: str = "orders", bucket: str | None = None) -> ExportTarget:
    return ExportTarget(bucket or env["bucket"], "exports/test", "acct", DB, container)


def key(doc: dict) -> tuple[str, str]:
    return json.dumps(doc.get("pk", {})), doc["id"]


def source_state(env, container: str = "orders") -> dict:
    """The double's documents right now, less system properties, by (pk, id)."""
    return {key(d): user(d) for d in env["state"].container(DB, container).iter_documents()}


def materialized(env, sequence=None, **kw) -> tuple[dict, materialize.MaterializeReport, list]:
    with materialize.open_state(env["s3"], target(env), sequence=sequence, **kw) as state:
        docs = list(state.documents())
        report = state.report
    by_key = {key(d.body): d.body for d in docs}
    assert len(by_key) == len(docs), "a document came out twice"
    return by_key, report, docs


def settings_one(env, **update):
    return env["settings"].model_copy(update={"cosmos_containers": ("orders",), **update})


def test_latest_version_round_trip_at_every_sequence_and_the_unknown_deletes(env):
    state = env["state"]
    settings = settings_one(env)
    docs = make_docs(300)
    state.upsert_many(DB, "orders", docs)
    at: dict[int, dict] = {}  # sequence -> the source's state when that run committed
    resurrected: dict[int, dict] = {}  # sequence -> deleted since the base snapshot, at their last exported version
    gone: dict = {}

    def commit(mode: str) -> int:
        seq = run(env, mode, settings=settings).containers[0].sequence
        at[seq] = source_state(env)
        if mode == "snapshot":
            gone.clear()
        resurrected[seq] = dict(gone)
        return seq

    def delete(doc: dict) -> None:
        gone[key(doc)] = user(next(d for d in state.container(DB, "orders").iter_documents() if key(d) == key(doc)))
        assert state.delete(DB, "orders", doc["id"], doc["pk"])

    assert commit("snapshot") == 1
    state.upsert_many(DB, "orders", [{**d, "n": -d["n"], "changed": 2} for d in docs[:20]] + make_docs(10, offset=900))
    for doc in docs[40:45]:
        delete(doc)
    assert commit("incremental") == 2
    for doc in docs[50:53]:
        delete(doc)
    state.upsert(DB, "orders", {**docs[40], "reborn": True})  # deleted in run 2, created again in run 3
    gone.pop(key(docs[40]))
    state.upsert_many(DB, "orders", [{**d, "changed": 3} for d in docs[:5]])
    assert commit("incremental") == 3
    assert commit("snapshot") == 4  # a fresh snapshot: deletes are exact again
    delete(docs[60])
    state.upsert(DB, "orders", {**docs[61], "changed": 5})
    assert commit("incremental") == 5

    unknown = {1: 0, 2: 1, 3: 2, 4: 0, 5: 1}
    for seq, expected in at.items():
        got, report, _ = materialized(env, seq)
        assert got == {**expected, **resurrected[seq]}, seq  # the source, plus what LatestVersion cannot delete
        assert set(resurrected[seq]) <= set(got) and not set(resurrected[seq]) & set(expected)
        assert report.sequence == seq and report.unknown_delete_incrementals == unknown[seq], seq
        assert report.snapshot_sequence == (1 if seq < 4 else 4) and report.deletes_applied == 0
        assert report.manifests_read == seq - report.snapshot_sequence + 1 and report.documents == len(got)
        if unknown[seq]:
            [warning] = report.warnings
            assert warning.startswith(
                f"{unknown[seq]} run(s) since the snapshot at sequence "
                f"{report.snapshot_sequence} (finished {report.snapshot_finished_at}) read "
                f"the change feed in LatestVersion mode, which does not record deletes"
            )
        else:
            assert report.warnings == [] and report.deletes_exact
    assert len(resurrected[3]) == 7 and len(resurrected[5]) == 1
    # The latest by default; --as-of picks the last run finished at or before the time.
    assert materialized(env)[1].sequence == 5
    store = CommitStore(env["s3"], target(env))
    third = next(m for m in store.committed_manifests() if m.sequence == 3)
    assert materialized(env, as_of=third.finished_at)[1].sequence == 3
    assert materialized(env, as_of=third.finished_at + timedelta(days=365))[1].sequence == 5


def test_all_versions_round_trip_is_exact_at_every_sequence(env):
    state, docs, settings = seeded_all_versions(env)
    at: dict[int, dict] = {}

    def commit(mode: str) -> int:
        seq = run(env, mode, settings=settings).containers[0].sequence
        at[seq] = source_state(env)
        return seq

    assert commit("snapshot") == 1
    for step in (1, 2, 3):  # several versions within one run: the last one wins
        for doc in docs[10:16]:
            state.upsert(DB, "orders", {**doc, "n": doc["n"] * 10 + step, "step": step})
    for doc in docs[20:25]:
        assert state.delete(DB, "orders", doc["id"], doc["pk"])
    for doc in make_docs(4, tag="new", offset=7000):  # created, changed and deleted within one run
        state.upsert(DB, "orders", doc)
        state.upsert(DB, "orders", {**doc, "n": -1})
        assert state.delete(DB, "orders", doc["id"], doc["pk"])
    assert state.delete(DB, "orders", docs[30]["id"], docs[30]["pk"])  # deleted and created again
    state.upsert(DB, "orders", {**docs[30], "reborn": True})
    assert commit("incremental") == 2
    assert state.delete(DB, "orders", docs[31]["id"], docs[31]["pk"])
    state.upsert(DB, "orders", {**docs[20], "back": True})  # deleted in run 2, created again in run 3
    assert commit("incremental") == 3

    deletes = {1: 0, 2: 10, 3: 11}
    for seq, expected in at.items():
        got, report, _ = materialized(env, seq)
        assert got == expected, seq
        assert report.deletes_applied == deletes[seq] and report.ttl_expiries_applied == 0
        assert report.unknown_delete_incrementals == 0 and report.warnings == [] and report.complete
    assert len(at[3]) == 300 - 5 + 1 - 1 + 0  # 5 deleted, 1 of them back, 1 more deleted


def test_manifest_records_the_container_definition(env):
    container = env["state"].container(DB, "orders")
    container.properties.update({"defaultTtl": 3600, "uniqueKeyPolicy": {"uniqueKeys": [{"paths": ["/email"]}]}})
    env["state"].upsert_many(DB, "orders", make_docs(5))
    run(env, "snapshot", settings=settings_one(env))
    [manifest] = CommitStore(env["s3"], target(env)).committed_manifests()
    assert manifest.format_version == contract.MANIFEST_FORMAT_VERSION == 3
    assert manifest.change_feed_mode == "LatestVersion" and manifest.query_filter is None
    assert manifest.container_definition.to_cosmos() == {
        "partitionKey": {"paths": ["/pk"], "kind": "Hash", "version": 2},
        "indexingPolicy": {
            "indexingMode": "consistent",
            "automatic": True,
            "includedPaths": [{"path": "/*"}],
            "excludedPaths": [{"path": '/"_etag"/?'}],
        },
        "defaultTtl": 3600,
        "uniqueKeyPolicy": {"uniqueKeys": [{"paths": ["/email"]}]},
    }
    assert materialized(env)[1].container_definition == manifest.container_definition.to_cosmos()


def test_hierarchical_partition_key_definition_and_values():
    hierarchical = {
        "id": "c",
        "partitionKey": {"paths": ["/tenant", "/user/id", "/session"], "kind": "MultiHash", "version": 2},
        "_rid": "x",
        "conflictResolutionPolicy": {},
    }
    definition = ContainerDefinition.of(hierarchical)
    assert definition.to_cosmos() == {
        "partitionKey": {"paths": ["/tenant", "/user/id", "/session"], "kind": "MultiHash", "version": 2}
    }
    paths = definition.partitionKey.paths
    doc = {"id": "1", "tenant": "t", "user": {"id": 7}}
    assert materialize.partition_key_of(doc, paths) == ["t", 7, {}]  # a missing level is undefined
    delete = {"tenant": "t", "user/id": 7}
    assert materialize.state_key(
        materialize._delete_partition_key({"partitionKey": delete}, paths), "1"
    ) == materialize.state_key(materialize.partition_key_of(doc, paths), "1")
    with pytest.raises(ValueError):
        ContainerDefinition.of({"partitionKey": {"paths": ["/a", "/b", "/c", "/d"], "kind": "MultiHash"}})


def test_filtered_query_snapshot_is_not_a_base_and_says_so(env):
    state = env["state"]
    docs = make_docs(100)
    state.upsert_many(DB, "orders", docs)
    plain = settings_one(env)
    filtered = settings_one(env, snapshot_source="query", query_filter="c.n >= 90")
    assert run(env, "snapshot", settings=filtered).containers[0].sequence == 1
    got, report, _ = materialized(env)
    assert (
        len(got) == 10 and not report.complete and report.filtered_snapshots == [{"sequence": 1, "filter": "c.n >= 90"}]
    )
    assert any(w.startswith("this state is NOT the full container") for w in report.warnings)
    assert run(env, "snapshot", settings=plain).containers[0].sequence == 2
    state.upsert(DB, "orders", {**docs[95], "n": 1000})
    assert run(env, "snapshot", settings=filtered).containers[0].sequence == 3
    got, report, _ = materialized(env)
    assert got == source_state(env) and report.snapshot_sequence == 2 and report.complete  # applied on top
    assert report.unknown_delete_incrementals == 1
    assert any("sequence 3 is a filtered query snapshot (WHERE c.n >= 90)" in w for w in report.warnings)


def test_awkward_documents_round_trip_byte_exact(env):
    from tests.reliability.test_bad_documents import awkward_docs

    docs = awkward_docs() + [
        {"id": "sur", "pk": "s", "hi": "a\ud800b", "lo": "\udfff", "half": "\ud83dx"},
        {"id": "n-big", "pk": 2**64 + 1, "v": 2**64 + 1},
    ]
    env["state"].upsert_many(DB, "orders", docs)
    run(env, "snapshot", settings=settings_one(env))
    env["state"].upsert(DB, "orders", {**docs[1], "again": 2})  # one of them through an incremental too
    run(env, "incremental", settings=settings_one(env))
    expected = {d["id"]: d for d in docs} | {docs[1]["id"]: {**docs[1], "again": 2}}
    got, report, ordered = materialized(env)
    assert {d["id"]: d for d in got.values()} == expected
    assert report.documents == len(docs)
    for doc in ordered:  # the bytes written are the canonical bytes of the source document
        line = jsonl.line_bytes(doc.body, not jsonl.needs_stdlib(doc.body))
        assert line == jsonl.to_utf8(jsonl.dumps_line(expected[doc.id]))
        assert doc.partition_key == ([expected[doc.id]["pk"]] if "pk" in expected[doc.id] else [{}])
    assert [d.id for d in ordered] == [d.id for d in materialized(env)[2]]  # the same order every time
    with_system = list(materialize.open_state(env["s3"], target(env), keep_system_properties=True).documents())
    assert all(set(contract.SYSTEM_PROPERTIES) - {"_lsn"} <= set(d.body) for d in with_system)


def test_documents_resume_by_position(env):
    env["state"].upsert_many(DB, "orders", make_docs(250))
    run(env, "snapshot", settings=settings_one(env))
    with materialize.open_state(env["s3"], target(env)) as state:
        everything = [d.body for d in state.documents()]
        assert [d.body for d in state.documents(start=100)] == everything[100:]
    assert len(everything) == 250


def test_refusals_name_the_reason_and_the_fix(env):
    s3 = env["s3"]
    with pytest.raises(materialize.MaterializeError) as err:
        materialize.open_state(s3, target(env))
    assert str(err.value).startswith(
        f"no committed export under s3://{env['bucket']}/exports/test/acct/shop/"
        f"orders/manifests/: nothing to materialize. Run an export first"
    )
    env["state"].upsert_many(DB, "orders", make_docs(20))
    run(env, "snapshot", settings=settings_one(env))
    run(env, "incremental", settings=settings_one(env))
    with pytest.raises(materialize.MaterializeError) as err:
        materialize.open_state(s3, target(env), sequence=7)
    assert "--sequence 7 is not a committed sequence under" in str(err.value)
    assert str(err.value).endswith("committed are 1..2; pass one of them, or --as-of a time")
    first = CommitStore(s3, target(env)).committed_manifests()[0]
    with pytest.raises(materialize.MaterializeError) as err:
        materialize.open_state(s3, target(env), as_of=first.finished_at - timedelta(seconds=1))
    assert "is before the first committed run under" in str(err.value)
    assert f"(sequence 1 finished at {first.finished_at.isoformat()}): pass a time at or after it" in str(err.value)
    with pytest.raises(materialize.MaterializeError) as err:
        materialize.open_state(s3, target(env), sequence=1, as_of=first.finished_at)
    assert str(err.value).startswith("both --sequence 1 and --as-of")
    with pytest.raises(materialize.MaterializeError) as err:
        materialize.open_state(s3, target(env), as_of=first.finished_at.replace(tzinfo=None))
    assert "has no time zone" in str(err.value)


def test_a_corrupted_part_is_refused_before_any_document(env):
    s3 = env["s3"]
    bucket = f"plain-{uuid.uuid4().hex[:10]}"  # unversioned: an overwrite replaces the only copy
    s3.create_bucket(Bucket=bucket)
    settings = settings_one(env, bucket=bucket)
    env["state"].upsert_many(DB, "orders", make_docs(400))
    run(env, "snapshot", settings=settings)
    [manifest] = CommitStore(s3, target(env, bucket=bucket)).committed_manifests()
    part = manifest.parts[1]
    body = s3.get_object(Bucket=bucket, Key=part.key)["Body"].read()
    lines = jsonl.decompress(body, "zstd").replace(b'"n":', b'"N":', 1)  # one changed byte, recompressed
    compressor = jsonl.new_compressor("zstd")
    s3.put_object(Bucket=bucket, Key=part.key, Body=compressor.compress(lines) + compressor.flush())
    with pytest.raises(materialize.CorruptPartError) as err:
        materialize.open_state(s3, target(env, bucket=bucket))
    message = str(err.value)
    assert message.startswith(f"part s3://{bucket}/{part.key} of sequence 1 is corrupted: sha256 ")
    assert f"where the manifest says {part.sha256}" in message and "Refused, nothing produced" in message
    s3.put_object(Bucket=bucket, Key=part.key, Body=body[: len(body) // 2])  # truncated
    with pytest.raises(materialize.CorruptPartError) as err:
        materialize.open_state(s3, target(env, bucket=bucket))
    assert f"bytes {len(body) // 2} where the manifest says {len(body)}" in str(err.value)


def test_ttl_expiries_are_applied_and_counted_apart(env):
    """A TTL expiry is a delete record with metadata.timeToLiveExpired (the double never expires documents:
    the record is written through the worker's own sink and commit, as an AllVersionsAndDeletes run would)."""
    from datetime import datetime, timezone

    from cosmos_export import layout
    from cosmos_export.commit import Manifest
    from cosmos_export.schema import SchemaTracker, next_schema
    from cosmos_export.sink import FeedRangeSink

    state, docs, settings = seeded_all_versions(env, count=10)
    run(env, "snapshot", settings=settings)
    t = target(env)
    store = CommitStore(env["s3"], t)
    loaded = store.load()
    now = datetime.now(timezone.utc)
    run_id = layout.new_run_id(now)
    sink = FeedRangeSink(
        env["s3"],
        t,
        run_id=run_id,
        started_at=now,
        feed_range="{}",
        feed_range_index=0,
        compression="zstd",
        part_size_bytes=1 << 20,
        kms_key_arn=None,
        schema=SchemaTracker(),
        log=None,
    )
    sink.write_page(
        [
            {
                "current": {},
                "metadata": {
                    "operationType": "delete",
                    "lsn": 900,
                    "id": "o-1",
                    "partitionKey": {"pk": "k-1"},
                    "timeToLiveExpired": True,
                },
            },
            {
                "current": {},
                "metadata": {
                    "operationType": "delete",
                    "lsn": 901,
                    "id": "o-2",
                    "partitionKey": {"pk": "k-2"},
                    "timeToLiveExpired": False,
                },
            },
            {"current": {**docs[3], "n": 33}, "metadata": {"operationType": "replace", "lsn": 902}},
        ]
    )
    records = sink.close()
    previous = loaded.checkpoint.schema_
    store.commit(
        loaded,
        Manifest(
            run_id=run_id,
            mode="incremental",
            account="acct",
            database=DB,
            container="orders",
            started_at=now,
            finished_at=now,
            parts=records,
            continuations=loaded.checkpoint.continuations,
            schema_previous=previous,
            schema_=next_schema(previous, {}),
            change_feed_mode="AllVersionsAndDeletes",
        ),
    )
    got, report, _ = materialized(env)
    assert {d["id"] for d in got.values()} == {d["id"] for d in docs} - {"o-1", "o-2"}
    assert got[key(docs[3])] == {**docs[3], "n": 33}
    assert (report.deletes_applied, report.ttl_expiries_applied) == (1, 1)


def test_format_1_manifests_stay_readable_and_take_a_later_definition(env):
    env["state"].upsert_many(DB, "orders", make_docs(30))
    run(env, "snapshot", settings=settings_one(env))
    s3, t = env["s3"], target(env)
    key_1 = f"{t.manifests_prefix}0000000001.json"
    old = json.loads(s3.get_object(Bucket=env["bucket"], Key=key_1)["Body"].read())
    for name in ("container_definition", "change_feed_mode", "query_filter"):
        del old[name]
    old["format_version"] = 1
    s3.put_object(Bucket=env["bucket"], Key=key_1, Body=json.dumps(old).encode())
    with pytest.raises(materialize.MaterializeError) as err:
        materialize.open_state(s3, t)
    assert "records the container's definition" in str(err.value) and "run one export" in str(err.value)
    run(env, "incremental", settings=settings_one(env))
    got, report, _ = materialized(env, 1)
    assert got == source_state(env) and report.container_definition_sequence == 2


def test_destination_suffixes_and_refusals():
    assert materialize.destination("out/state.jsonl", "orders").compression is None
    assert materialize.destination("out/state.jsonl.gz", "orders").compression == "gzip"
    zst = materialize.destination("s3://b/some/prefix/", "orders")
    assert (zst.bucket, zst.key, zst.compression) == ("b", "some/prefix/orders.jsonl.zst", "zstd")
    assert zst.report_url == "s3://b/some/prefix/orders.report.json"
    with pytest.raises(materialize.MaterializeError) as err:
        materialize.destination("out/state.json", "orders")
    assert str(err.value).startswith(
        "--to 'out/state.json' has no JSON Lines suffix: end it in .jsonl, .jsonl.gz, .jsonl.zst"
    )
