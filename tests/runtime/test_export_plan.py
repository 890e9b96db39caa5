"""export.plan_container: where each feed range starts and ends, and the manifest's mode. No I/O."""

from __future__ import annotations

import pytest

from cosmos_export.export import RangePlan, explain, feed_range_key, plan_container
from cosmos_export.source import SourceError

RANGES = [{"Range": {"min": "", "max": "7F"}}, {"Range": {"min": "7F", "max": "FF"}}]
KEYS = [feed_range_key(r) for r in RANGES]


def never_listed():
    raise AssertionError("an incremental run must keep the checkpoint's feed ranges, not list the current ones")


def plan(mode, continuations=None, *, source="changefeed", feed="LatestVersion"):
    listing = (lambda: RANGES) if continuations is None else never_listed
    return plan_container(mode, continuations, listing, snapshot_source=source, change_feed_mode=feed)


def test_snapshot_reads_every_current_range_from_the_beginning():
    p = plan("snapshot")
    assert (p.mode, p.manifest_mode, p.first_run) == ("snapshot", "snapshot", False)
    assert p.ranges == (
        RangePlan(0, KEYS[0], RANGES[0], "change_feed", None, "LatestVersion", end_at_now=False),
        RangePlan(1, KEYS[1], RANGES[1], "change_feed", None, "LatestVersion", end_at_now=False),
    )


def test_incremental_continues_each_checkpointed_range_in_key_order():
    continuations = {KEYS[1]: "etag-b", KEYS[0]: None}  # a range never read yet starts at the beginning
    p = plan("incremental", continuations, feed="AllVersionsAndDeletes")
    assert (p.mode, p.manifest_mode, p.first_run) == ("incremental", "incremental", False)
    assert [(r.index, r.key, r.feed_range, r.continuation) for r in p.ranges] == [
        (0, KEYS[0], RANGES[0], None),
        (1, KEYS[1], RANGES[1], "etag-b"),
    ]
    assert {(r.read, r.change_feed_mode, r.end_at_now) for r in p.ranges} == {
        ("change_feed", "AllVersionsAndDeletes", False)
    }


def test_incremental_without_a_checkpoint_is_the_first_snapshot():
    p = plan("incremental", None)
    assert (p.mode, p.manifest_mode, p.first_run) == ("snapshot", "snapshot", True)
    assert [r.continuation for r in p.ranges] == [None, None]


def test_query_snapshot_takes_now_first_and_records_its_mode():
    p = plan("snapshot", source="query")
    assert p.manifest_mode == "query-snapshot"
    assert {(r.read, r.end_at_now) for r in p.ranges} == {("query", True)}


def test_all_versions_snapshot_reads_latest_versions_and_saves_now():
    """AllVersionsAndDeletes cannot start from the beginning: read current versions, continue from 'now'."""
    p = plan("snapshot", feed="AllVersionsAndDeletes")
    assert p.manifest_mode == "snapshot"
    assert {(r.read, r.change_feed_mode, r.continuation, r.end_at_now) for r in p.ranges} == {
        ("change_feed", "LatestVersion", None, True)
    }


def test_an_empty_checkpoint_plans_no_range():
    p = plan("incremental", {})
    assert (p.mode, p.ranges) == ("incremental", ())


@pytest.mark.parametrize(
    ("error", "container", "message"),
    [
        (SourceError("container shop/x does not exist"), "x", "x: container shop/x does not exist"),
        (SourceError("weaker than Session"), None, "weaker than Session"),
        (RuntimeError("boom"), "orders", "orders: RuntimeError: boom"),
    ],
)
def test_one_mapping_turns_failures_into_export_errors(error, container, message):
    assert str(explain(error, settings=None, container=container)) == message
