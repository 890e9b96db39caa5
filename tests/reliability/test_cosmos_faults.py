"""Cosmos faults during an export: every run either commits each document exactly once or fails loudly.

Faults come from the gateway double's knobs, switched on before a run or in
the middle of one (`WhenServed`: after the gateway answered N change-feed
pages). After every scenario the committed manifests are read back from S3 and
each (id, version) counted.
"""

from __future__ import annotations

import time

import pytest

from cosmos_export import export, source
from tests.reliability.harness import DB, WhenServed, make_docs, record, versions

N = 2000  # 4 feed ranges x ~10 pages of 50


def snapshot_then_changes(world, fault_during_incremental, *, changed: int = 300, added: int = 100):
    """Snapshot, then change+add documents and run incremental with the fault; returns expected counts."""
    base = make_docs(N)
    world.seed(base)
    world.run("incremental")
    changes = make_docs(changed, version=2) + make_docs(added, version=1, offset=N)
    world.seed(changes)
    fault_during_incremental()
    return versions(base) + versions(changes)


def test_429_storm_with_retry_after_is_absorbed(world):
    docs = make_docs(N)
    world.seed(docs)
    # 30 throttles in a row on the change feed, 40 ms retry-after each: the SDK must wait and retry.
    world.state.throttle_next(30, retry_after_ms=40, operation="changefeed.read")
    began = time.monotonic()
    world.run("incremental")
    took = time.monotonic() - began
    stats = world.state.stats_dict()["changefeed.read"]
    assert stats.get("429", 0) == 30
    assert took >= 30 * 0.04 / 4  # the retry-after was honoured, not ignored (4 readers in parallel)
    got = world.committed()
    assert got.counts() == versions(docs) and max(got.counts().values()) == 1
    record(
        "Cosmos 429 storm (30 in a row, x-ms-retry-after-ms=40)",
        trials=1,
        documents=len(got.docs),
        outcome="committed exactly once; retry-after honoured",
    )


def test_429_storm_on_a_single_request_longer_than_the_sdk_retries(world):
    """More consecutive 429s than the SDK's own throttle retries (9) on one range still completes."""
    docs = make_docs(200)
    world.seed(docs)
    world.state.throttle_next(25, retry_after_ms=5, operation="changefeed.read")
    world.run("incremental", concurrency=1)
    got = world.committed()
    assert got.counts() == versions(docs)
    record(
        "Cosmos 429 x25 on one request (beyond the SDK's 9 retries)",
        trials=1,
        documents=len(got.docs),
        outcome="committed exactly once",
    )


@pytest.mark.parametrize("kind", ["unavailable", "reset"])
def test_503_and_connection_reset_mid_run(world, monkeypatch, kind):
    inject = {"unavailable": world.state.unavailable_next, "reset": world.state.reset_next}[kind]

    def fault():
        with WhenServed(world.state, "changefeed.read", 5, lambda: inject(6, operation="changefeed.read")) as w:
            world.run("incremental")
        assert w.fired.is_set()

    expected = snapshot_then_changes(world, fault)
    stats = world.state.stats_dict()["changefeed.read"]
    if kind == "unavailable":
        assert stats.get("503", 0) >= 6
    got = world.committed()
    assert got.counts() == expected and got.manifests == 2
    record(
        f"Cosmos {'503' if kind == 'unavailable' else 'connection reset mid-body'} x6 mid-run",
        trials=1,
        documents=len(got.docs),
        outcome="committed exactly once",
    )


def test_snapshot_survives_a_split_in_the_middle(world):
    docs = make_docs(N)
    world.seed(docs)
    with WhenServed(world.state, "changefeed.read", 8, lambda: world.state.split(DB, world.container)) as w:
        world.run("incremental")
    assert w.fired.is_set()
    assert len(world.state.container(DB, world.container).ranges) == 5
    got = world.committed()
    assert got.counts() == versions(docs)
    # The next incremental after more changes reads across the split ranges, still exactly once.
    more = make_docs(400, version=2)
    world.seed(more)
    world.run("incremental")
    got = world.committed()
    assert got.counts() == versions(docs) + versions(more)
    record(
        "Cosmos partition split (410/1002) mid-snapshot, then incremental",
        trials=1,
        documents=len(got.docs),
        outcome="committed exactly once",
    )


def test_incremental_survives_a_split_in_the_middle(world):
    def fault():
        with WhenServed(world.state, "changefeed.read", 3, lambda: world.state.split(DB, world.container)) as w:
            world.run("incremental")
        assert w.fired.is_set()

    expected = snapshot_then_changes(world, fault, changed=1200, added=300)
    got = world.committed()
    assert got.counts() == expected
    # And once more after the split: only new changes, nothing repeated.
    again = make_docs(50, version=3)
    world.seed(again)
    world.run("incremental")
    got = world.committed()
    assert got.counts() == expected + versions(again)
    record(
        "Cosmos partition split (410/1002) mid-incremental",
        trials=1,
        documents=len(got.docs),
        outcome="committed exactly once",
    )


def test_a_range_answering_304_for_a_long_time_is_not_skipped(world):
    """While one range is stuck on 304 the run still finishes; its changes come with the next run, once."""
    base = make_docs(N)
    world.seed(base)
    world.run("incremental")
    ranges = [r.id for r in world.state.container(DB, world.container).ranges]
    world.state.not_modified_for(DB, world.container, ranges[0], 120.0)  # lags from now on
    changes = make_docs(N, version=2)  # touches every range
    world.seed(changes)
    began = time.monotonic()
    world.run("incremental")
    assert time.monotonic() - began < 30  # did not wait for the range to wake up
    got = world.committed()
    stuck = got.counts() - versions(base)
    assert 0 < sum(stuck.values()) < N  # the other ranges' changes are in; the stuck range's are not yet
    world.state.clear_faults()
    world.run("incremental")
    got = world.committed()
    assert got.counts() == versions(base) + versions(changes)
    record(
        "Cosmos range answering 304 for 120 s during an incremental",
        trials=1,
        documents=len(got.docs),
        outcome="run finished; the range's changes committed exactly once by the next run",
    )


def test_a_snapshot_of_a_range_stuck_on_304_still_exports_its_documents(world):
    """304 means "nothing changed since your continuation": a from-Beginning read still gets the data."""
    docs = make_docs(N)
    world.seed(docs)
    stuck = world.state.container(DB, world.container).ranges[0]
    world.state.not_modified_for(DB, world.container, stuck.id, 120.0)
    world.run("snapshot")
    got = world.committed()
    assert got.counts() == versions(docs) and max(got.counts().values()) == 1
    assert len(stuck.docs) > 0 and world.state.stats_dict()["changefeed.read"].get("304", 0) >= 1
    record(
        "Cosmos range answering 304 for 120 s during a snapshot",
        trials=1,
        documents=len(got.docs),
        outcome="its existing documents exported; committed exactly once",
    )


def test_rbac_5300_right_after_deploy_clears(world, monkeypatch):
    docs = make_docs(500)
    world.seed(docs)
    world.state.not_propagated_for(3.0)
    world.run("incremental")
    assert world.state.stats_dict()["account.read"].get("403", 0) >= 1
    got = world.committed()
    assert got.counts() == versions(docs)
    record(
        "Cosmos RBAC 403/5300 for 3 s right after deploy",
        trials=1,
        documents=len(got.docs),
        outcome="retried until propagated; committed exactly once",
    )


def test_rbac_5300_that_never_clears_fails_loudly(world, monkeypatch):
    # retrying() reads these at call time: a 3 s budget instead of 300 s.
    monkeypatch.setattr(source, "RETRY_SECONDS", 3.0)
    monkeypatch.setattr(source, "RETRY_ATTEMPTS", 4)
    monkeypatch.setattr(source, "RETRY_WAIT_MAX_SECONDS", 1.0)
    world.seed(make_docs(50))
    world.state.not_propagated_for(60.0)
    with pytest.raises(export.ExportError) as e:
        world.run("incremental")
    assert "403/5300" in str(e.value) and "role assignment" in str(e.value)
    assert world.all_keys() == {}
    record(
        "Cosmos RBAC 403/5300 that never clears",
        trials=1,
        documents=0,
        outcome="exit with the role-assignment fix; nothing written",
    )


@pytest.mark.parametrize("kind", ["unavailable", "reset"])
def test_query_snapshot_fault_mid_range_fails_loudly_or_commits_and_the_rerun_is_exact(world, kind):
    """A query has no per-request continuation the worker keeps: a fault after a range's first page is not
    resumed. The run must then fail with a reason and commit nothing, and the rerun commit everything once."""
    docs = make_docs(N)
    world.seed(docs)
    inject = {"unavailable": world.state.unavailable_next, "reset": world.state.reset_next}[kind]
    outcome = "retried by the SDK within the page; committed exactly once"
    with WhenServed(world.state, "query", 6, lambda: inject(4, operation="query")) as w:
        try:
            world.run("snapshot", snapshot_source="query")
        except export.ExportError as e:
            assert "rerun the export" in str(e) or "503" in str(e), str(e)
            assert world.committed().manifests == 0
            outcome = f"failed loudly ('{str(e)[:70]}'), nothing committed; rerun committed exactly once"
            world.run("snapshot", snapshot_source="query")
    assert w.fired.is_set()
    assert world.state.stats_dict()["query"].get("503" if kind == "unavailable" else "0", 0) == 4  # all 4 served
    got = world.committed()
    assert got.manifests == 1 and got.counts() == versions(docs) and max(got.counts().values()) == 1
    record(
        f"Cosmos {'503' if kind == 'unavailable' else 'connection reset mid-body'} x4 in the middle of a "
        f"query snapshot",
        trials=1,
        documents=len(got.docs),
        outcome=outcome,
    )
