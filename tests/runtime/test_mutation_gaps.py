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
