"""Gaps `make mutation` found beyond issue 20's eight points (docs/mutation.md): each test kills the mutants named.

Error messages are behaviour here (the project's rule: name the variable, the value and the fix), so a
mutant that blanks or rewrites one is a gap, not noise.
"""

from __future__ import annotations

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


def test_cleanup_deletes_orphans_in_one_request_and_logs_each_part(s3, bucket):
    # cleanup_orphans mutant 28 (`len(batch) == 1000` -> `!=`: one DeleteObjects per key) and 46-54 (the
    # orphan_part_deleted event and its fields). The 1000-key limit itself (mutants 29-33) needs 1001
    # objects: about 15 s of PUTs against moto here, too slow for the fast tests (docs/mutation.md).
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
