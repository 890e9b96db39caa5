"""Gaps `make mutation` found beyond issue 20's eight points (docs/mutation.md): each test kills the mutants named.

Error messages are behaviour here (the project's rule: name the variable, the value and the fix), so a
mutant that blanks or rewrites one is a gap, not noise.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from cosmos_export import layout
from cosmos_export.contract import Env
from cosmos_export.settings import SettingsError, _choices, load_settings
from tests.runtime.test_safety_paths import bucket, s3  # noqa: F401  # fixtures
from tests.runtime.test_settings import env  # noqa: F401  # the fixture


def test_settings_error_lists_each_problem_on_its_own_line():
    # SettingsError.__init__ mutants 2, 4, 5, 7
    assert str(SettingsError(["A=1: bad", "B=2: worse"])) == "invalid worker settings:\n  - A=1: bad\n  - B=2: worse"


def test_choices_quote_two_values_and_list_more():
    # _choices mutants 1-9
    assert _choices(("gzip", "zstd")) == "'gzip' or 'zstd'"
    assert _choices(("a", "b", "c")) == "a, b, c"


def test_a_bad_compression_shows_both_choices_as_the_fix(env):
    env.setenv(Env.COMPRESSION, "brotli")
    with pytest.raises(SettingsError) as err:
        load_settings()
    [problem] = err.value.problems
    assert problem.startswith("EXPORT_COMPRESSION='brotli': ") and problem.endswith("; use 'gzip' or 'zstd'")


def test_restore_target_for_maps_each_source_container(env):
    # WorkerSettings.restore_target_for mutants 1, 2
    env.setenv(Env.RESTORE_TARGETS, "orders=orders-drill")
    settings = load_settings()
    assert settings.restore_target_for("orders") == "orders-drill"
    assert settings.restore_target_for("customers") is None


def test_layout_errors_say_what_is_wrong_and_the_range():
    # ExportTarget.__post_init__ mutants 2-4, part_key mutants 9 and 15
    with pytest.raises(ValueError, match="^bucket is empty: set the export bucket name$"):
        layout.ExportTarget("", "exports", "acct", "db", "orders")
    target = layout.ExportTarget("b", "exports", "acct", "db", "orders")
    run_id = layout.new_run_id(datetime(2026, 1, 2, tzinfo=timezone.utc))
    kw = dict(run_id=run_id, started_at=datetime(2026, 1, 2, tzinfo=timezone.utc), compression="gzip")
    with pytest.raises(ValueError, match=r"^feed_range_index=10000 is out of range 0\.\.9999$"):
        layout.part_key(target, feed_range_index=10000, part_number=1, **kw)
    with pytest.raises(ValueError, match=r"^part_number=0 is out of range 1\.\.99999$"):
        layout.part_key(target, feed_range_index=0, part_number=0, **kw)


def test_run_ids_and_partitions_are_in_utc_whatever_the_local_zone(monkeypatch):
    # _utc mutant 3 (astimezone(None) is the process's local zone: equal to UTC only where TZ is UTC)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        late = datetime(2026, 1, 2, 22, 30, tzinfo=timezone(timedelta(hours=-5)))  # 03:30 UTC on Jan 3
        assert layout.new_run_id(late).startswith("20260103T033000Z-")
        target = layout.ExportTarget("b", "exports", "acct", "db", "orders")
        key = layout.part_key(
            target,
            run_id=layout.new_run_id(late),
            started_at=late,
            feed_range_index=0,
            part_number=1,
            compression="gzip",
        )
        assert "/dt=2026-01-03/" in key
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_cleanup_never_aborts_an_open_upload_of_a_kept_run(s3, bucket):
    # cleanup_orphans mutant 39 (`orphan(key) and initiated < cutoff` -> `or`): it aborted kept runs' uploads
    from cosmos_export.commit import CommitStore
    from tests.runtime.test_safety_paths import live_run_id, target_of, uploads

    target = target_of(bucket)
    live = live_run_id()  # starts in an hour: every upload opened now is older than its cutoff
    key = layout.part_key(
        target,
        run_id=live,
        started_at=layout.run_started_at(live),
        feed_range_index=0,
        part_number=1,
        compression="gzip",
    )
    s3.create_multipart_upload(Bucket=bucket, Key=key)

    CommitStore(s3, target).cleanup_orphans({live})

    assert uploads(s3, bucket) == {key}


# --- commit.py: the cleanup cutoff is strict, DeleteObjects batches, the log events -----------------


class Recorder:
    """An audit.Logger that keeps (level, event, fields) of every call."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def info(self, event: str, **fields) -> None:
        self.events.append(("info", event, fields))

    def warning(self, event: str, **fields) -> None:
        self.events.append(("warning", event, fields))


def orphan_key(target, started: datetime, part_number: int = 1) -> str:
    run_id = layout.new_run_id(started)
    return layout.part_key(
        target, run_id=run_id, started_at=started, feed_range_index=0, part_number=part_number, compression="gzip"
    )


def test_cleanup_keeps_an_orphan_part_last_written_exactly_at_the_cutoff(s3, bucket):
    # cleanup_orphans mutant 26 (`obj.last_modified < cutoff` -> `<=`). The clock is S3's: the live run is
    # placed so that its cutoff (start - 10 min) is the part's LastModified to the second.
    from cosmos_export.commit import ORPHAN_SAFETY_MARGIN, CommitStore
    from tests.runtime.test_safety_paths import keys, target_of

    target = target_of(bucket)
    key = orphan_key(target, datetime.now(timezone.utc) - timedelta(hours=2))
    s3.put_object(Bucket=bucket, Key=key, Body=b"{}\n")
    [listed] = s3.list_objects_v2(Bucket=bucket, Prefix=target.data_prefix)["Contents"]
    written = listed["LastModified"]
    assert written.microsecond == 0  # S3 lists whole seconds: a run id (whole seconds) can name this instant
    at_cutoff = layout.new_run_id(written + ORPHAN_SAFETY_MARGIN)
    store = CommitStore(s3, target)

    assert store.cleanup_orphans({at_cutoff}) == []
    assert keys(s3, bucket, target.data_prefix) == {key}
    # One second later the same part is older than the cutoff: deleted (the control that it is an orphan).
    assert store.cleanup_orphans({layout.new_run_id(written + ORPHAN_SAFETY_MARGIN + timedelta(seconds=1))}) == [key]


def test_cleanup_keeps_an_orphan_upload_initiated_exactly_at_the_cutoff(s3, bucket):
    # cleanup_orphans mutant 41 (`upload.initiated < cutoff` -> `<=`). moto reports one fixed Initiated for
    # every upload, so the runs are placed around whatever it reports.
    from cosmos_export.commit import ORPHAN_SAFETY_MARGIN, CommitStore
    from tests.runtime.test_safety_paths import target_of, uploads

    target = target_of(bucket)
    probe = s3.create_multipart_upload(Bucket=bucket, Key=orphan_key(target, datetime.now(timezone.utc)))
    [listed] = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    s3.abort_multipart_upload(Bucket=bucket, Key=listed["Key"], UploadId=probe["UploadId"])
    initiated = listed["Initiated"]
    assert initiated.microsecond == 0
    key = orphan_key(target, initiated - timedelta(hours=1))  # a run that started well before the cutoff
    s3.create_multipart_upload(Bucket=bucket, Key=key)
    [again] = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert again["Initiated"] == initiated  # the premise: the instant the cutoff is placed at
    store = CommitStore(s3, target)

    store.cleanup_orphans({layout.new_run_id(initiated + ORPHAN_SAFETY_MARGIN)})
    assert uploads(s3, bucket) == {key}
    store.cleanup_orphans({layout.new_run_id(initiated + ORPHAN_SAFETY_MARGIN + timedelta(seconds=1))})
    assert uploads(s3, bucket) == set()


def test_cleanup_without_a_run_to_keep_is_refused_with_the_fix(s3, bucket):
    # cleanup_orphans 5 (the message wrapped in "XX": a substring match does not see it)
    from cosmos_export.commit import CommitStore
    from tests.runtime.test_safety_paths import target_of

    with pytest.raises(ValueError, match="^keep_run_ids is empty: pass at least the current run's id$"):
        CommitStore(s3, target_of(bucket)).cleanup_orphans(set())


def test_cleanup_deletes_orphans_in_one_request_and_logs_each_part(s3, bucket):
    # cleanup_orphans mutant 28 (`len(batch) == 1000` -> `!=`: one DeleteObjects per key) and 46-54 (the
    # orphan_part_deleted event and its fields). The 1000-key limit itself (mutants 29-33): the 1001-key
    # test below, with a listing that is not 1001 PUTs to moto.
    from cosmos_export.commit import CommitStore
    from tests.runtime.test_safety_paths import keys, live_run_id, target_of

    target = target_of(bucket)
    started = datetime.now(timezone.utc) - timedelta(hours=2)
    run_id = layout.new_run_id(started)
    orphans = [
        layout.part_key(
            target, run_id=run_id, started_at=started, feed_range_index=i, part_number=1, compression="gzip"
        )
        for i in range(3)
    ]
    for key in orphans:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    sizes: list[int] = []

    def record(params, **_):
        sizes.append(len(params["Delete"]["Objects"]))

    log = Recorder()
    s3.meta.events.register("provide-client-params.s3.DeleteObjects", record)
    try:
        deleted = CommitStore(s3, target, log).cleanup_orphans({live_run_id()})
    finally:
        s3.meta.events.unregister("provide-client-params.s3.DeleteObjects", record)

    assert sizes == [3]
    assert deleted == orphans and keys(s3, bucket, target.data_prefix) == set()  # listed in key order
    assert log.events == [("info", "orphan_part_deleted", {"key": k, "run_id": run_id}) for k in orphans]


class RefusesOneKey:
    """The real client, except that DeleteObjects leaves `key` in place and reports it in `Errors`, as S3 does
    for a key the caller may not delete (moto never reports a per-key error)."""

    def __init__(self, real, key: str) -> None:
        self._real, self._key = real, key

    def __getattr__(self, name):
        method = getattr(self._real, name)
        if name != "delete_objects":
            return method

        def delete_objects(*, Delete, **kwargs):
            rest = [o for o in Delete["Objects"] if o["Key"] != self._key]
            response = method(Delete={**Delete, "Objects": rest}, **kwargs) if rest else {}
            error = {"Key": self._key, "Code": "AccessDenied", "Message": "Access Denied"}
            return {**response, "Errors": [*response.get("Errors", []), error]}

        return delete_objects


class ListsManyOrphans:
    """The real client, except that listing the data prefix returns `keys` (in S3's pages of 1000) and
    DeleteObjects only records each request's keys: 1001 orphans without 1001 PUTs to moto."""

    def __init__(self, real, data_prefix: str, keys: list[str], written: datetime) -> None:
        self._real, self._prefix, self._keys, self._written = real, data_prefix, keys, written
        self.deletes: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def get_paginator(self, operation: str):
        real = self._real.get_paginator(operation)
        if operation != "list_objects_v2":
            return real
        outer = self

        class Pages:
            def paginate(self, *, Bucket, Prefix):
                if Prefix != outer._prefix:
                    return real.paginate(Bucket=Bucket, Prefix=Prefix)
                return (
                    {"Contents": [{"Key": k, "LastModified": outer._written} for k in outer._keys[i : i + 1000]]}
                    for i in range(0, len(outer._keys), 1000)
                )

        return Pages()

    def delete_objects(self, *, Bucket, Delete):
        self.deletes.append([o["Key"] for o in Delete["Objects"]])
        return {}


def test_cleanup_deletes_1001_orphans_in_batches_of_1000_then_1_each_key_once(s3, bucket):
    # cleanup_orphans mutants 29-33 (DeleteObjects' 1000-key limit: `== 1000` -> `== 1001`, `== 999`, ...).
    from cosmos_export.commit import CommitStore
    from tests.runtime.test_safety_paths import live_run_id, target_of

    target = target_of(bucket)
    started = datetime.now(timezone.utc) - timedelta(hours=2)
    run_id = layout.new_run_id(started)
    orphans = [
        layout.part_key(
            target,
            run_id=run_id,
            started_at=started,
            feed_range_index=i % 10,
            part_number=i // 10 + 1,
            compression="gzip",
        )
        for i in range(1001)
    ]
    client = ListsManyOrphans(s3, target.data_prefix, orphans, started)
    deleted = CommitStore(client, target).cleanup_orphans({live_run_id()})
    assert [len(batch) for batch in client.deletes] == [1000, 1]
    assert [k for batch in client.deletes for k in batch] == orphans == deleted


def test_a_part_s3_refuses_to_delete_stops_cleanup_naming_it(s3, bucket):
    # _delete_orphans 3, 4, 5 (the first refused key, its code and message, in the error)
    from cosmos_export.commit import CommitStore
    from tests.runtime.test_safety_paths import live_run_id, target_of

    target = target_of(bucket)
    started = datetime.now(timezone.utc) - timedelta(hours=2)
    keys = [orphan_key(target, started, n) for n in (1, 2)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    with pytest.raises(RuntimeError) as err:
        CommitStore(RefusesOneKey(s3, keys[0]), target).cleanup_orphans({live_run_id()})
    assert str(err.value) == f"deleting orphan part {keys[0]} failed: AccessDenied Access Denied"


def _manifest_of(target, run_id: str, records, tracker, **extra):
    from cosmos_export.commit import Manifest
    from cosmos_export.schema import next_schema

    now = datetime.now(timezone.utc)
    return Manifest(
        run_id=run_id,
        mode="snapshot",
        account=target.account,
        database=target.database,
        container=target.container,
        started_at=now,
        finished_at=now,
        parts=records,
        continuations={'{"r":0}': "c"},
        schema_previous=None,
        schema_=next_schema(None, tracker),
        **extra,
    )


def _stored(s3, bucket: str, key: str) -> tuple[bytes, str]:
    got = s3.get_object(Bucket=bucket, Key=key)
    return got["Body"].read(), got["ContentType"]


def test_commit_and_roll_forward_store_json_and_log_their_events(s3, bucket):
    # CommitStore.commit 15, 20, 21, 59-74 (content type, run_committed); _put_checkpoint 12, 23, 28, 35, 41,
    # 42, 46, 50, 51 (newest_ts, committed_at in UTC, content type of both writes); load 30-41
    # (checkpoint_roll_forward); _dump 2, 4, 6 (the stored documents use the aliases: "schema").
    from tests.runtime.test_safety_paths import target_of, write_run

    target = target_of(bucket)
    log = Recorder()
    from cosmos_export.commit import CommitStore

    store = CommitStore(s3, target, log)
    run1, records1, tracker1 = write_run(s3, target, datetime.now(timezone.utc), [{"id": "a"}, {"id": "b"}])
    first = store.commit(store.load(), _manifest_of(target, run1, records1, tracker1, newest_ts=1700000000))
    manifest_key = layout.manifest_key(target, 1)
    assert log.events == [
        (
            "info",
            "run_committed",
            {
                "sequence": 1,
                "run_id": run1,
                "manifest_key": manifest_key,
                "documents": 2,
                "bytes": sum(r.bytes for r in records1),
                "parts": 1,
            },
        )
    ]
    body, content_type = _stored(s3, bucket, manifest_key)
    assert content_type == "application/json" and '"schema"' in body.decode() and '"schema_"' not in body.decode()
    body, content_type = _stored(s3, bucket, layout.checkpoint_key(target))
    stored = json.loads(body)
    assert content_type == "application/json" and "schema" in stored and stored["newest_ts"] == 1700000000
    assert datetime.fromisoformat(stored["committed_at"]).utcoffset() == timedelta(0)
    assert first.newest_ts == 1700000000

    # A run that wrote manifest 2 and died before moving the checkpoint: the next load rolls forward.
    run2, records2, tracker2 = write_run(s3, target, datetime.now(timezone.utc), [{"id": "c"}])
    crashed = _manifest_of(target, run2, records2, tracker2, newest_ts=1700000100).model_copy(update={"sequence": 2})
    s3.put_object(Bucket=bucket, Key=layout.manifest_key(target, 2), Body=crashed.model_dump_json(by_alias=True))
    log.events.clear()
    loaded = store.load()
    assert log.events == [
        (
            "warning",
            "checkpoint_roll_forward",
            {
                "sequence": 2,
                "run_id": run2,
                "reason": "a previous run committed its manifest but stopped before moving the checkpoint",
            },
        )
    ]
    assert loaded.checkpoint is not None and loaded.checkpoint.newest_ts == 1700000100
    body, content_type = _stored(s3, bucket, layout.checkpoint_key(target))
    assert content_type == "application/json" and json.loads(body)["manifest_key"] == layout.manifest_key(target, 2)


def test_a_retried_manifest_put_that_finds_our_own_manifest_logs_it(s3, bucket):
    # CommitStore.commit 34-46 (manifest_already_written and its fields)
    from cosmos_export.commit import CommitStore, _dump
    from tests.runtime.test_safety_paths import target_of, write_run

    target = target_of(bucket)
    log = Recorder()
    store = CommitStore(s3, target, log)
    loaded = store.load()
    run_id, records, tracker = write_run(s3, target, datetime.now(timezone.utc), [{"id": "a"}])
    manifest = _manifest_of(target, run_id, records, tracker)
    # What the first, applied attempt left behind before its response was lost.
    s3.put_object(
        Bucket=bucket, Key=layout.manifest_key(target, 1), Body=_dump(manifest.model_copy(update={"sequence": 1}))
    )
    assert store.commit(loaded, manifest).sequence == 1
    assert log.events[0] == (
        "warning",
        "manifest_already_written",
        {
            "sequence": 1,
            "run_id": run_id,
            "reason": "the manifest PUT was applied but its response was lost; the retry saw our own manifest",
        },
    )


class RollsForwardFirst:
    """The real client; just before the first conditional checkpoint PUT, another worker's load() runs.

    That load rolls the checkpoint forward to the manifest just written, so this PUT loses (412): the race of
    two workers moving the same checkpoint, made deterministic.
    """

    def __init__(self, real, target) -> None:
        self._real, self._target, self.raced = real, target, False

    def __getattr__(self, name):
        method = getattr(self._real, name)
        if name != "put_object":
            return method

        def put_object(**kwargs):
            if kwargs["Key"] == layout.checkpoint_key(self._target) and not self.raced:
                from cosmos_export.commit import CommitStore

                self.raced = True
                CommitStore(self._real, self._target).load()
            return method(**kwargs)

        return put_object


def test_commit_whose_checkpoint_put_loses_to_a_roll_forward_returns_that_checkpoint(s3, bucket):
    # CommitStore.commit 52, 53, 54, 56, 57, 58 (the checkpoint PUT lost to someone rolling forward to our
    # manifest: committed all the same)
    from cosmos_export.commit import CommitStore
    from tests.runtime.test_safety_paths import target_of, write_run

    target = target_of(bucket)
    racing = RollsForwardFirst(s3, target)
    store = CommitStore(racing, target)
    loaded = store.load()
    run_id, records, tracker = write_run(s3, target, datetime.now(timezone.utc), [{"id": "a"}])
    checkpoint = store.commit(loaded, _manifest_of(target, run_id, records, tracker))
    assert racing.raced and (checkpoint.sequence, checkpoint.run_id) == (1, run_id)
    assert json.loads(_stored(s3, bucket, layout.checkpoint_key(target))[0])["run_id"] == run_id


def test_two_loads_rolling_forward_at_once_both_end_at_the_manifest(s3, bucket):
    # CommitStore.load 46, 47 (a roll-forward PUT that loses the race is not an error: re-read)
    from cosmos_export.commit import CommitStore
    from tests.runtime.test_safety_paths import target_of, write_run

    target = target_of(bucket)
    run_id, records, tracker = write_run(s3, target, datetime.now(timezone.utc), [{"id": "a"}])
    manifest = _manifest_of(target, run_id, records, tracker).model_copy(update={"sequence": 1})
    s3.put_object(Bucket=bucket, Key=layout.manifest_key(target, 1), Body=manifest.model_dump_json(by_alias=True))
    racing = RollsForwardFirst(s3, target)
    loaded = CommitStore(racing, target).load()
    assert racing.raced and loaded.checkpoint is not None and loaded.checkpoint.run_id == run_id
    assert loaded.next_sequence == 2


def test_a_manifest_for_another_container_is_refused_with_the_fix(s3, bucket):
    # CommitStore.commit 3 (the message)
    from cosmos_export.commit import CommitStore
    from tests.runtime.test_safety_paths import target_of, write_run

    target = target_of(bucket)
    run_id, records, tracker = write_run(s3, target, datetime.now(timezone.utc), [{"id": "a"}])
    manifest = _manifest_of(target_of(bucket, "customers"), run_id, records, tracker)
    store = CommitStore(s3, target)
    with pytest.raises(ValueError) as err:
        store.commit(store.load(), manifest)
    assert str(err.value) == (
        "manifest is for acct/db/customers, this store is for acct/db/orders: "
        "build the manifest from the same ExportTarget"
    )


def test_a_lost_race_says_which_sequence_and_which_run(s3, bucket):
    # CommitStore.commit 29-33 (the ConcurrentRunError message)
    from cosmos_export.commit import CommitStore, ConcurrentRunError
    from tests.runtime.test_safety_paths import commit_run, target_of, write_run

    target = target_of(bucket)
    store = CommitStore(s3, target)
    loaded = store.load()
    commit_run(s3, target, datetime.now(timezone.utc) - timedelta(hours=1), [{"id": "winner"}])
    run_id, records, tracker = write_run(s3, target, datetime.now(timezone.utc), [{"id": "loser"}])
    with pytest.raises(ConcurrentRunError) as err:
        store.commit(loaded, _manifest_of(target, run_id, records, tracker))
    assert str(err.value) == (
        f"another export run committed sequence 1 for acct/db/orders first; run {run_id}'s parts are left "
        f"uncommitted and will be cleaned up; rerun to export the remaining changes"
    )


def test_container_definition_keeps_the_restore_relevant_fields_of_a_container_read():
    # ContainerDefinition.of 1-27 and to_cosmos 1-7: reached otherwise only by the restore tests (not in the
    # fast selection). Cosmos's own JSON in, the same JSON out, unknown fields left out.
    from cosmos_export.commit import ContainerDefinition

    indexing = {"indexingMode": "consistent", "includedPaths": [{"path": "/*"}], "excludedPaths": []}
    unique = {"uniqueKeys": [{"paths": ["/email"]}]}
    properties = {
        "id": "orders",
        "_rid": "x",
        "_etag": '"0"',
        "partitionKey": {"paths": ["/tenant"], "kind": "Hash", "version": 2, "systemKey": False, "extra": 1},
        "indexingPolicy": indexing,
        "defaultTtl": -1,
        "uniqueKeyPolicy": unique,
        "conflictResolutionPolicy": {"mode": "LastWriterWins"},
    }
    definition = ContainerDefinition.of(properties)
    assert definition.to_cosmos() == {
        "partitionKey": {"paths": ["/tenant"], "kind": "Hash", "version": 2, "systemKey": False},
        "indexingPolicy": indexing,
        "defaultTtl": -1,
        "uniqueKeyPolicy": unique,
    }
    # A container read without the optional policies: nothing invented, None fields left out.
    assert ContainerDefinition.of({"id": "c", "partitionKey": {"paths": ["/pk"]}}).to_cosmos() == {
        "partitionKey": {"paths": ["/pk"], "kind": "Hash"}
    }


@pytest.mark.parametrize(
    "body,message",
    [
        (b"[]", "is not a valid checkpoint (<root>: Input should be a valid dictionary or instance of Checkpoint)"),
        (
            b"{}",
            "is not a valid checkpoint (account: Field required; database: Field required; container: Field "
            "required; sequence: Field required; run_id: Field required)",
        ),
        (b"\xff", "is not valid JSON ("),
    ],
)
def test_a_bad_checkpoint_message_names_the_object_and_the_first_five_problems(s3, bucket, body, message):
    # CommitStore._parse 1-33 (the messages: `<root>` for the document itself, at most 5 problems, "; "
    # between them) and load 18, 24, 25 (the document is called a checkpoint)
    from cosmos_export.commit import CheckpointError, CommitStore
    from tests.runtime.test_safety_paths import target_of

    target = target_of(bucket)
    key = layout.checkpoint_key(target)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    with pytest.raises(CheckpointError) as err:
        CommitStore(s3, target).load()
    text = str(err.value)
    assert text.startswith(f"checkpoint s3://{bucket}/{key} {message}"), text
    assert text.endswith(
        "; it was left unchanged: restore a previous version of it from the bucket's version history, "
        "or move it aside to start a new snapshot"
    )


def test_a_bad_manifest_message_names_the_manifest_and_the_nested_field(s3, bucket):
    # CommitStore._parse 21 (nested locations joined with "."), _manifest 13, 19, 20 (called a manifest)
    from cosmos_export.commit import CheckpointError, CommitStore
    from tests.runtime.test_safety_paths import target_of, write_run

    target = target_of(bucket)
    run_id, records, tracker = write_run(s3, target, datetime.now(timezone.utc), [{"id": "a"}])
    document = json.loads(_manifest_of(target, run_id, records, tracker).model_dump_json(by_alias=True))
    document["sequence"] = 1
    document["parts"][0]["sha256"] = "not-a-digest"
    key = layout.manifest_key(target, 1)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(document).encode())
    with pytest.raises(CheckpointError) as err:
        CommitStore(s3, target).load()
    assert str(err.value).startswith(f"manifest s3://{bucket}/{key} is not a valid manifest (parts.0.sha256: ")


def test_stray_json_objects_under_manifests_are_skipped(s3, bucket):
    # committed_manifests 14, 19 (only `<digits>.json` names are manifests; anything else is skipped)
    from cosmos_export.commit import CommitStore
    from tests.runtime.test_safety_paths import commit_run, target_of

    target = target_of(bucket)
    run_id, _, _ = commit_run(s3, target, datetime.now(timezone.utc), [{"id": "a"}])
    for stray in ("notes.json", "0000000001x.json"):
        s3.put_object(Bucket=bucket, Key=f"{target.manifests_prefix}{stray}", Body=b"{}")
    assert [m.run_id for m in CommitStore(s3, target).committed_manifests()] == [run_id]


# --- settings.py: the environment the Pulumi program writes, and how bad values are shown -----------


def test_environment_renders_each_kind_of_value_as_the_worker_reads_it(env):
    # settings.environment 1-29 (reached only by the Pulumi program's tests, not the fast selection)
    from cosmos_export.settings import environment

    marker = object()  # anything else (a Pulumi output) is passed through untouched
    rendered = environment(
        prefix=None,
        cosmos_containers=("orders", "customers"),
        restore_targets=["orders=orders-drill", "customers=c2"],
        cosmos_tls_verify=False,
        current_state=True,
        concurrency=8,
        max_ru_per_second=12.5,
        bucket="acme-exports",
        stack=marker,
    )
    assert rendered == {
        Env.COSMOS_CONTAINERS: "orders,customers",
        Env.RESTORE_TARGETS: "orders=orders-drill,customers=c2",
        Env.COSMOS_TLS_VERIFY: "false",
        Env.CURRENT_STATE: "true",
        Env.CONCURRENCY: "8",
        Env.MAX_RU_PER_SECOND: "12.5",
        Env.BUCKET: "acme-exports",
        Env.STACK: marker,
    }
    for name, value in rendered.items():
        if value is not marker:
            env.setenv(name, value)
    settings = load_settings()  # what the program writes, the worker reads back
    assert settings.cosmos_containers == ("orders", "customers") and settings.cosmos_tls_verify is False
    assert settings.restore_target_for("customers") == "c2" and settings.max_ru_per_second == 12.5
    with pytest.raises(ValueError) as err:
        environment(bucket="b", nope=1, also_bad=2)
    assert str(err.value) == "not worker settings: also_bad, nope; add the field to WorkerSettings first"


def test_shown_values_are_quoted_text_and_unset_says_so():
    # settings._shown 1-12
    from cosmos_export.settings import _shown

    assert _shown(None) == "(unset)"
    assert _shown(("a", "b")) == "'a,b'" and _shown(["x", 2]) == "'x,2'"
    assert _shown(5) == "'5'" and _shown("v") == "'v'"


def test_fix_for_is_the_fields_own_fix():
    # settings.fix_for 1, 2, 4-6, 8-10
    from cosmos_export.settings import fix_for

    assert fix_for("bucket") == "set it to the export bucket name (stack output bucketName)"


def test_unknown_overrides_are_named_sorted(env):
    # settings.load_settings 8-10
    with pytest.raises(SettingsError) as err:
        load_settings(zeta=1, alpha=2, concurrency=None)
    assert err.value.problems == ["unknown setting(s) alpha, zeta"]


def test_cross_field_problems_are_joined_in_the_validation_error(env):
    # settings._CrossFieldError 2-5 (the text pydantic shows when WorkerSettings is built directly)
    from pydantic import ValidationError

    from cosmos_export.settings import WorkerSettings

    env.delenv(Env.AZURE_TENANT_ID)
    env.delenv(Env.AZURE_CLIENT_ID)
    with pytest.raises(ValidationError) as err:
        WorkerSettings()
    assert (
        "is required in workload identity mode; set it to the Entra tenant id (stack output azureTenantId); "
        "is required in workload identity mode; set it to the Entra application's client id"
    ) in str(err.value)


def test_a_missing_required_variable_is_unset_and_required(env):
    # settings._describe 38-58 (a missing variable: no value shown, "is required", its fix)
    env.delenv(Env.BUCKET)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert err.value.problems == [
        "EXPORT_BUCKET=(unset): is required; set it to the export bucket name (stack output bucketName)"
    ]


def test_a_type_error_message_starts_lowercase_and_shows_the_override(env):
    # settings._describe 70-78 (pydantic's message, first letter lowered) and 41-44 (an override's value)
    with pytest.raises(SettingsError) as err:
        load_settings(concurrency="many")
    assert err.value.problems == [
        "EXPORT_CONCURRENCY='many': input should be a valid integer, unable to parse string as an integer; use 1..64"
    ]


def test_a_required_variable_set_to_empty_text_counts_as_unset(env):
    # settings._describe 40, 49, 50 (env_ignore_empty: "" is missing, and shown as unset, not as '')
    env.setenv(Env.BUCKET, "")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert err.value.problems == [
        "EXPORT_BUCKET=(unset): is required; set it to the export bucket name (stack output bucketName)"
    ]
