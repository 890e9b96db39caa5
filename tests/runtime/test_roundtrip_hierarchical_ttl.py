"""End to end against the gateway double: a hierarchical-key container and a TTL'd container, both in
AllVersionsAndDeletes mode, through export, materialize and restore.

The double hashes MultiHash keys as the SDK does and expires documents on its controllable clock, so the
expiries the worker reports come from the change feed itself (`timeToLiveExpired`), not from a hand-written
record.
"""

from __future__ import annotations

import json

from cosmos_export import contract, materialize
from cosmos_export.commit import CommitStore
from cosmos_export.layout import ExportTarget
from sandbox.doubles.cosmos.rbac import RoleAssignment
from tests.runtime.test_restore import DB, RESTORE_OID, SYSTEM, TARGET_DB, do_restore, export_run, world  # noqa: F401

PATHS = ["/tenant", "/user/id"]


def user(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in SYSTEM}


def full_key(doc: dict) -> tuple:
    return json.dumps(materialize.partition_key_of(doc, PATHS)), doc["id"]


def documents(world, db: str, container: str) -> dict:
    return {full_key(d): user(d) for d in world["state"].container(db, container).iter_documents()}


def materialized(world, container: str) -> tuple[dict, materialize.MaterializeReport]:
    target = ExportTarget(world["bucket"], "exports/test", "acct", DB, container)
    with materialize.open_state(world["s3"], target) as state:
        docs = {full_key(d.body): d.body for d in state.documents()}
        return docs, state.report


def all_versions(world, containers: tuple[str, ...]) -> None:
    world["state"].record_all_versions = True
    world["settings"] = world["settings"].model_copy(update={"change_feed_mode": "AllVersionsAndDeletes"})
    for name in containers:  # the restore identity may write its targets, nothing else
        world["state"].add_role_assignment(
            RoleAssignment(RESTORE_OID, f"/dbs/{TARGET_DB}/colls/{name}-restore", contract.COSMOS_RESTORE_DATA_ACTIONS)
        )


def test_hierarchical_key_container_round_trips_with_the_full_key(world):
    state = world["state"]
    state.create_container(DB, "events", PATHS, feed_ranges=4)
    state.create_container(TARGET_DB, "events-restore", PATHS, feed_ranges=2)
    all_versions(world, ("events",))
    # The same id under different tenants/users: only the full key tells them apart.
    docs = [{"id": f"e-{i % 40}", "tenant": f"t-{i % 3}", "user": {"id": i % 7}, "n": i} for i in range(120)]
    state.upsert_many(DB, "events", docs)
    assert len(documents(world, DB, "events")) == 120
    assert len({r.id for r in state.container(DB, "events").ranges if r.docs}) > 1  # spread by MultiHash EPK

    export_run(world, "snapshot", containers=("events",))
    for doc in docs[:10]:
        state.upsert(DB, "events", {**doc, "n": doc["n"] + 1000})
    for doc in docs[10:15]:
        assert state.delete(DB, "events", doc["id"], [doc["tenant"], doc["user"]["id"]])
    export_run(world, "incremental", containers=("events",))

    source = documents(world, DB, "events")
    got, report = materialized(world, "events")
    assert got == source and len(source) == 115
    assert report.deletes_applied == 5 and report.ttl_expiries_applied == 0
    assert report.container_definition["partitionKey"] == {"paths": PATHS, "kind": "MultiHash", "version": 2}
    [first, *_] = CommitStore(
        world["s3"], ExportTarget(world["bucket"], "exports/test", "acct", DB, "events")
    ).committed_manifests()
    assert first.container_definition.to_cosmos()["partitionKey"]["paths"] == PATHS

    result = do_restore(world, container="events", target_container="events-restore")
    assert documents(world, TARGET_DB, "events-restore") == source
    assert result.documents == 115


def test_ttl_container_expiries_are_applied_reported_and_not_restored(world):
    state = world["state"]
    state.create_container(DB, "sessions").properties["defaultTtl"] = 60
    state.create_container(TARGET_DB, "sessions-restore")
    all_versions(world, ("sessions",))
    docs = [{"id": f"s-{i}", "pk": f"u-{i % 9}", "n": i, **({"ttl": -1} if i % 4 == 0 else {})} for i in range(40)]
    state.upsert_many(DB, "sessions", docs)
    export_run(world, "snapshot", containers=("sessions",))

    expired = state.advance_clock(61)[f"{DB}/sessions"]
    assert len(expired) == 30  # every document without its own ttl=-1
    assert state.delete(DB, "sessions", "s-0", "u-0")  # one explicit delete beside the expiries
    export_run(world, "incremental", containers=("sessions",))

    source = {(d["pk"], d["id"]): user(d) for d in state.container(DB, "sessions").iter_documents()}
    assert len(source) == 9
    target = ExportTarget(world["bucket"], "exports/test", "acct", DB, "sessions")
    with materialize.open_state(world["s3"], target) as materialized_state:
        got = {(d.body["pk"], d.body["id"]): d.body for d in materialized_state.documents()}
        report = materialized_state.report
    assert got == source
    assert report.ttl_expiries_applied == 30 and report.deletes_applied == 1
    assert report.container_definition["defaultTtl"] == 60

    do_restore(world, container="sessions", target_container="sessions-restore")
    restored = {(d["pk"], d["id"]): user(d) for d in state.container(TARGET_DB, "sessions-restore").iter_documents()}
    assert restored == source  # no expired document came back
