"""restore and drill in-process: export (gateway double -> moto S3), then restore with a separate identity.

The export identity may only read the source database; the restore identity only write the restore targets
(contract.COSMOS_RESTORE_DATA_ACTIONS on /dbs/restore/colls/<target>), each through the double's RBAC.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from datetime import datetime, timezone

import boto3
import pytest
from azure.cosmos import exceptions as cosmos_exceptions

from cosmos_export import contract, export, restore
from cosmos_export.restore import RestoreRefused, RestoreRequest, run_drill, run_restore
from cosmos_export.settings import WorkerSettings
from cosmos_export.source import cosmos_client
from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
from sandbox.doubles.cosmos.rbac import RoleAssignment
from sandbox.doubles.cosmos.testing import JwtCredential, TestTokenIssuer

DB, TARGET_DB = "shop", "restore"
EXPORT_OID = "7d3c1a52-7f1e-4c7e-9a3b-0f2f6f1c2b11"
RESTORE_OID = "0e5a9c3d-2b7f-4f1a-8c6e-3d9b1a7e5c42"
RESTORE_CLIENT_ID = "33333333-2222-3333-4444-555555555555"
SYSTEM = restore.SYSTEM_PROPERTIES
TARGETS = ("orders-restore", "orders-scratch")
BATCH = 40


def make_docs(n: int, tag: str = "o", offset: int = 0) -> list[dict]:
    return [
        {
            "id": f"{tag}-{i}",
            "pk": f"k-{i % 53}",
            "n": i,
            "big": 2**64 + i,
            "name": "Zoë" * (i % 3),
            "nested": {"v": [i, None, {"deep": [[i]]}]},
        }
        for i in range(offset, offset + n)
    ]


def user(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in SYSTEM}


def by_key(docs) -> dict:
    return {(d["pk"], d["id"]): user(d) for d in docs}


@pytest.fixture()
def world(moto_server, local_ca, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    session = boto3.Session(region_name="us-east-1")
    s3 = session.client("s3", endpoint_url=moto_server.url)
    bucket = f"restore-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    issuer = TestTokenIssuer()
    state = CosmosGatewayState(
        "acct",
        token_verifier=issuer.verify,
        role_assignments=[
            RoleAssignment(EXPORT_OID, f"/dbs/{DB}", contract.COSMOS_DATA_ACTIONS),
            *(
                RoleAssignment(RESTORE_OID, f"/dbs/{TARGET_DB}/colls/{t}", contract.COSMOS_RESTORE_DATA_ACTIONS)
                for t in (*TARGETS, "wrong-pk")
            ),
        ],
    )
    state.create_container(DB, "orders")
    state.create_container(DB, "customers")
    for name in TARGETS:
        state.create_container(TARGET_DB, name, feed_ranges=2)
    state.create_container(TARGET_DB, "wrong-pk", partition_key_path="/tenant")
    with serve_cosmos(state, local_ca) as served:
        settings = WorkerSettings(
            identity_mode="workload",
            aws_region="us-east-1",
            azure_tenant_id=issuer.tenant_id,
            azure_client_id="22222222-2222-3333-4444-555555555555",
            cosmos_endpoint=served.url,
            cosmos_account="acct",
            cosmos_database=DB,
            cosmos_containers="orders,customers",
            cosmos_tls_verify=str(local_ca.bundle_file),
            bucket=bucket,
            prefix="exports/test",
            s3_endpoint=moto_server.url,
            page_size=200,
            concurrency=4,
            restore_batch_documents=BATCH,
        )
        restore_settings = settings.model_copy(
            update={
                "azure_client_id": RESTORE_CLIENT_ID,
                "restore_target_database": TARGET_DB,
                "restore_targets": (("orders", "orders-scratch"),),
            }
        )
        export_credential, restore_credential = JwtCredential(issuer, EXPORT_OID), JwtCredential(issuer, RESTORE_OID)
        yield dict(
            settings=settings,
            restore_settings=restore_settings,
            state=state,
            s3=s3,
            session=session,
            bucket=bucket,
            export_credential=export_credential,
            restore_client=cosmos_client(restore_settings, restore_credential),
            export_client=cosmos_client(settings, export_credential),
        )


def export_run(world, mode="snapshot", containers=("orders",)):
    settings = world["settings"].model_copy(update={"cosmos_containers": containers})
    return export.run_export(
        settings, mode, credential=world["export_credential"], session=world["session"], s3=world["s3"]
    )


def do_restore(world, **request):
    request = {"container": "orders", "target_container": "orders-restore", "target_database": TARGET_DB, **request}
    result, _ = run_restore(
        world["restore_settings"], RestoreRequest(**request), client=world["restore_client"], s3=world["s3"]
    )
    return result


def target_docs(world, name="orders-restore") -> dict:
    return by_key(world["state"].container(TARGET_DB, name).iter_documents())


def source_docs(world) -> dict:
    return by_key(world["state"].container(DB, "orders").iter_documents())


def expected_writes(docs, skip: int = 0) -> dict[str, int]:
    """The write requests a restore of `docs` sends (after `skip` committed documents): in state order, per
    checkpoint batch of BATCH, one per run of one partition key value: a point upsert for a run of one
    document, a transactional batch for a longer one."""
    keys = sorted(restore.document_key(d, ["/pk"]) for d in docs)[skip:]
    counts = {"item.upsert": 0, "item.batch": 0}
    for start in range(0, len(keys), BATCH):
        pks = [json.loads(k)[0] for k in keys[start : start + BATCH]]
        runs = [len(list(group)) for _, group in itertools.groupby(pks)]
        counts["item.upsert"] += sum(1 for n in runs if n == 1)
        counts["item.batch"] += sum(1 for n in runs if n > 1)
    return counts


def write_requests(state) -> dict[str, int]:
    return {op: sum(n for (o, _), n in state.stats.items() if o == op) for op in ("item.upsert", "item.batch")}


def restore_objects(world) -> list[str]:
    listed = world["s3"].list_objects_v2(Bucket=world["bucket"], Prefix="exports/test/")
    return [o["Key"] for o in listed.get("Contents", []) if f"/{contract.RESTORES_DIR}/" in o["Key"]]


def progress_of(world, result) -> dict:
    return json.loads(world["s3"].get_object(Bucket=world["bucket"], Key=result.progress_key)["Body"].read())


def snapshot_change_incremental(world) -> None:
    state = world["state"]
    docs = make_docs(150)
    state.upsert_many(DB, "orders", docs)
    export_run(world)
    state.upsert_many(
        DB, "orders", [{**d, "n": -d["n"], "changed": True} for d in docs[:12]] + make_docs(8, offset=5000)
    )
    state.split(DB, "orders")
    export_run(world, "incremental")


def test_restore_writes_the_latest_state_exactly_at_low_priority(world):
    snapshot_change_incremental(world)
    result = do_restore(world)
    assert target_docs(world) == source_docs(world)  # bodies compared exactly, system properties aside
    assert result.sequence == 2 and result.documents == 158 == result.documents_upserted
    assert result.deletes_applied == 0 and result.request_charge > 158 * 5  # ~5.7 RU per write in the double
    # 53 partition key values: mostly transactional batches of 2-4 documents, every request at Low priority.
    state = world["state"]
    assert write_requests(state) == expected_writes(source_docs(world).values())
    assert expected_writes(source_docs(world).values())["item.batch"] > 40
    assert state.priority_levels("item.upsert") + state.priority_levels("item.batch") == {
        "Low": sum(write_requests(state).values())
    }
    progress = progress_of(world, result)
    assert progress["status"] == "complete" and progress["documents_committed"] == 158
    assert progress["batches_committed"] == -(-158 // BATCH)
    assert progress["manifest_keys"] == result.manifest_keys and len(result.manifest_keys) == 2
    assert result.progress_key == (
        f"exports/test/acct/{DB}/orders/{contract.RESTORES_DIR}/{result.restore_id}/progress.json"
    )
    # The id is derived from what is restored where: the same request finds the same progress.
    assert result.restore_id == restore.restore_id("acct", DB, "orders", 2, TARGET_DB, "orders-restore")


def test_restore_an_earlier_sequence(world):
    snapshot_change_incremental(world)
    first = do_restore(world, sequence=1)
    assert first.sequence == 1 and first.documents == 150
    assert target_docs(world) == by_key(make_docs(150))


def test_exact_deletes_what_the_state_does_not_have(world):
    snapshot_change_incremental(world)
    state = world["state"]
    extras = make_docs(25, tag="stray")
    state.upsert_many(TARGET_DB, "orders-restore", extras + [{**make_docs(1)[0], "n": 999}])
    plain = do_restore(world)
    assert plain.deletes_applied == 0 and len(target_docs(world)) == 158 + 25  # upserts only: the strays stay
    feed_reads_before = state.priority_levels("changefeed.read")
    exact = do_restore(world, exact=True)
    assert exact.deletes_applied == 25 and exact.restore_id == plain.restore_id and exact.attempt == 2
    assert target_docs(world) == source_docs(world)
    assert state.priority_levels("item.delete") == {"Low": 25}
    assert set(state.priority_levels("changefeed.read") - feed_reads_before) == {"Low"}  # listing the target


def test_exact_deletes_in_batches_and_a_refused_batch_is_redone_one_by_one(world, monkeypatch):
    snapshot_change_incremental(world)
    state = world["state"]
    strays = [{**d, "pk": f"stray-{d['n'] % 4}"} for d in make_docs(30, tag="stray")]  # 4 values: batches
    state.upsert_many(TARGET_DB, "orders-restore", strays)
    real = restore.target_documents
    gone = strays[0]

    def listing_then_someone_deletes(container, stop, budget):
        for page in real(container, stop, budget):
            if any(d["id"] == gone["id"] for d in page):
                assert state.delete(TARGET_DB, "orders-restore", gone["id"], gone["pk"])  # listed, then deleted
            yield page

    monkeypatch.setattr(restore, "target_documents", listing_then_someone_deletes)
    result = do_restore(world, exact=True)
    assert target_docs(world) == source_docs(world) and result.deletes_applied == 30
    assert state.stats[("item.batch", 207)] == 1  # the batch holding the vanished one: 404, nothing deleted
    assert state.stats[("item.delete", 404)] == 1  # then one by one, the vanished one skipped
    assert state.stats[("item.batch", 200)] == 3 + expected_writes(source_docs(world).values())["item.batch"]


def test_write_units_are_runs_of_one_partition_key_value_within_the_batch_limits():
    docs = [{"id": str(i), "pk": "a"} for i in range(250)] + [{"id": "x", "pk": 1}, {"id": "y", "pk": True}]
    docs += [{"id": "z1", "pk": "a"}, {"id": "z2"}, {"id": "z3"}]  # "a" again later: a new run; no key: undefined
    units = list(restore.write_units(docs, ["/pk"]))
    assert [len(u) for u in units] == [100, 100, 50, 1, 1, 1, 2]  # 1 and true are different partition keys
    assert [d for u in units for d in u] == docs  # the order kept
    big = [{"id": str(i), "pk": "b", "blob": "x" * 300_000} for i in range(15)]
    sizes = [len(u) for u in restore.write_units(big, ["/pk"])]
    assert sizes == [6, 6, 3]  # 2 MB per request at most
    assert all(sum(len(json.dumps(d)) for d in u) < 2 * 1024 * 1024 for u in restore.write_units(big, ["/pk"]))


def test_awkward_documents_and_every_partition_key_type_restore_exactly_in_batches(world):
    from tests.reliability.test_bad_documents import awkward_docs

    docs = awkward_docs() + [
        {"id": "n-big", "pk": 2**64 + 1, "v": 2**64 + 1},
        {"id": "sur", "pk": "s", "t": "a\ud800b"},
    ]
    docs += [{**d, "id": f"{d['id']}-2"} for d in docs]  # a neighbour with the same key each: batches of 2
    state = world["state"]
    state.upsert_many(DB, "orders", docs)
    export_run(world)
    result = do_restore(world, exact=True)
    by_id = lambda items: {d["id"]: user(d) for d in items}  # noqa: E731
    assert by_id(state.container(TARGET_DB, "orders-restore").iter_documents()) == by_id(docs)
    assert result.documents == len(docs) == 34 and result.deletes_applied == 0
    # Every partition key value (string, number, 2**64+1, true, false, null, undefined, astral) in one batch
    # each, the two ~2 MB documents apart (one would not fit a batch with the other); no batch refused.
    assert state.stats[("item.batch", 200)] == 14 and state.stats[("item.upsert", 201)] == 2  # 15 values
    assert not state.stats[("item.batch", 207)]


def test_allow_source_target_upserts_but_never_deletes(world):
    state = world["state"]
    state.upsert_many(DB, "orders", make_docs(100))
    export_run(world)
    state.upsert_many(DB, "orders", [{**d, "n": 0} for d in make_docs(100)] + make_docs(5, tag="new"))
    # Writing a source takes a deliberate grant the stack never makes (restore role on the source container).
    state.add_role_assignment(
        RoleAssignment(RESTORE_OID, f"/dbs/{DB}/colls/orders", contract.COSMOS_RESTORE_DATA_ACTIONS)
    )
    result = do_restore(world, target_database=DB, target_container="orders", allow_source_target=True)
    got = source_docs(world)
    assert result.deletes_applied == 0 and len(got) == 105  # the 5 newer documents are still there
    assert all(got[k] == v for k, v in by_key(make_docs(100)).items())  # the 100 are back to the snapshot


def _refusal_cases():
    wrong_time = datetime(2000, 1, 1, tzinfo=timezone.utc)
    return [
        ("no-state", dict(container="customers"), "no committed"),
        ("unknown-sequence", dict(sequence=99), "99"),
        ("before-first-run", dict(as_of=wrong_time), "2000-01-01"),
        ("missing-target", dict(target_container="nope"), "does not exist"),
        ("partition-key", dict(target_container="wrong-pk"), "partition key"),
        ("source-target", dict(target_database=DB, target_container="orders"), "--allow-source-target"),
        (
            "exact-on-source",
            dict(target_database=DB, target_container="orders", allow_source_target=True, exact=True),
            "never deletes",
        ),
        ("sequence-and-time", dict(sequence=1, as_of=wrong_time), "--sequence and --as-of"),
    ]


@pytest.mark.parametrize("request_kw,expected", [c[1:] for c in _refusal_cases()], ids=[c[0] for c in _refusal_cases()])
def test_refusals_write_nothing(world, request_kw, expected):
    state = world["state"]
    state.upsert_many(DB, "orders", make_docs(200))
    export_run(world)
    state.upsert_many(TARGET_DB, "orders-restore", make_docs(3, tag="keep"))
    before = {name: target_docs(world, name) for name in TARGETS}
    source_before = source_docs(world)
    with pytest.raises(RestoreRefused) as refused:
        do_restore(world, **request_kw)
    assert expected in str(refused.value)
    assert {name: target_docs(world, name) for name in TARGETS} == before and source_docs(world) == source_before
    assert not any(op.startswith("item.") and op != "item.read" for op, _ in state.stats)  # no write was sent
    assert restore_objects(world) == []  # and no progress object


def test_a_rerun_continues_after_the_last_checkpointed_batch(world, monkeypatch):
    state = world["state"]
    state.upsert_many(DB, "orders", make_docs(170))
    export_run(world)
    stop = threading.Event()
    real = restore.ProgressStore.save
    saves = []

    def save_then_stop(self, progress):
        real(self, progress)
        saves.append(progress.documents_committed)
        if progress.documents_committed >= 2 * BATCH:
            stop.set()  # SIGTERM after the second batch's checkpoint

    monkeypatch.setattr(restore.ProgressStore, "save", save_then_stop)
    request = RestoreRequest(container="orders", target_container="orders-restore", target_database=TARGET_DB)
    with pytest.raises(restore.RestoreInterrupted):
        run_restore(world["restore_settings"], request, client=world["restore_client"], s3=world["s3"], stop=stop)
    assert len(target_docs(world)) == 2 * BATCH
    monkeypatch.setattr(restore.ProgressStore, "save", real)
    before = write_requests(state)
    result = do_restore(world)
    assert result.resumed_from == 2 * BATCH and result.documents_upserted == 90
    after = write_requests(state)
    # Only the 90 documents after the checkpoint are written again.
    assert {op: after[op] - before[op] for op in after} == expected_writes(make_docs(170), skip=2 * BATCH)
    assert progress_of(world, result)["runs_started_at"] == [0, 2 * BATCH]
    assert target_docs(world) == source_docs(world)


@pytest.mark.parametrize("operation", ["item.upsert", "item.batch"])
def test_throttling_storm_honours_retry_after_and_the_budget(world, operation):
    state = world["state"]
    docs = make_docs(150)
    if operation == "item.upsert":  # one document per partition key value: point upserts only
        docs = [{**d, "pk": f"k-{d['n']}"} for d in docs]
    state.upsert_many(DB, "orders", docs)
    export_run(world)
    state.request_log = []
    state.throttle_next(20, retry_after_ms=150, operation=operation)
    budget = 600.0
    result = do_restore(world, max_ru_per_second=budget)
    assert target_docs(world) == source_docs(world)
    assert write_requests(state)[operation] == expected_writes(docs)[operation] + 20
    log = [entry for entry in state.request_log if entry[1] in ("item.upsert", "item.batch")]
    throttled = [e for e in log if e[2] == 429]
    assert len(throttled) == 20
    if operation == "item.upsert":  # a document's own URL tells its retry (all batches share the container's)
        for arrived, _, _, _, path in throttled:  # the SDK waited x-ms-retry-after-ms before retrying it
            retry = min(e[0] for e in log if e[4] == path and e[0] > arrived)
            assert retry - arrived >= 0.150 - 0.005
    charged = [(t, c) for t, _, status, c, _ in log if status < 400]
    largest = max(c for _, c in charged)
    for t0, _ in charged:
        for window in (0.5, 1.0, 2.0):
            used = sum(c for t, c in charged if t0 <= t < t0 + window)
            # The budget, plus one request's charge; 20 ms of loopback jitter between start and arrival.
            assert used <= budget * (window + 0.02) + largest, (window, used)
    assert result.request_charge == pytest.approx(sum(c for _, c in charged), abs=0.1)


def test_restore_identity_is_refused_on_a_source_and_the_export_identity_on_a_target(world):
    state = world["state"]
    state.upsert_many(DB, "orders", make_docs(3))
    restore_on_source = world["restore_client"].get_database_client(DB).get_container_client("orders")
    export_on_target = world["export_client"].get_database_client(TARGET_DB).get_container_client("orders-restore")
    for container in (restore_on_source, export_on_target):  # no assignment there at all: even metadata is refused
        with pytest.raises(cosmos_exceptions.CosmosHttpResponseError) as denied:
            container.upsert_item({"id": "x", "pk": "k"})
        assert (denied.value.status_code, denied.value.sub_status) == (403, 5301)
        assert "does not have required RBAC permissions" in denied.value.message
    # The export role reads its source (metadata, items, feed) but every item write is refused, action by action.
    export_on_source = world["export_client"].get_database_client(DB).get_container_client("orders")
    assert export_on_source.read_item("o-1", partition_key="k-1")["n"] == 1
    doc = {"id": "o-1", "pk": "k-1", "n": -1}
    for action, write in (
        ("create", lambda: export_on_source.create_item({**doc, "id": "new"})),
        ("upsert", lambda: export_on_source.upsert_item(doc)),
        ("replace", lambda: export_on_source.replace_item("o-1", doc)),
        ("delete", lambda: export_on_source.delete_item("o-1", partition_key="k-1")),
    ):
        with pytest.raises(cosmos_exceptions.CosmosHttpResponseError) as denied:
            write()
        assert (denied.value.status_code, denied.value.sub_status) == (403, 5301)
        assert f"[Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/{action}]" in denied.value.message
    assert source_docs(world) == by_key(make_docs(3))  # nothing changed
    assert state.container(TARGET_DB, "orders-restore").document_count() == 0


# --- drills ---------------------------------------------------------------------


def drill(world, **kw):
    return run_drill(world["restore_settings"], "orders", client=world["restore_client"], s3=world["s3"], **kw)


def test_drill_restores_exactly_compares_and_writes_its_report(world):
    snapshot_change_incremental(world)
    world["state"].upsert_many(TARGET_DB, "orders-scratch", make_docs(7, tag="leftover"))
    report = drill(world)
    assert report["ok"] is True
    assert report["documents_expected"] == report["documents_found"] == 158
    assert report["documents_mismatched"] == 0 and report["deletes_applied"] == 7
    assert report["sequence"] == 2 and len(report["manifest_keys"]) == 2
    assert report["source"] == {"account": "acct", "database": DB, "container": "orders"}
    assert report["target"] == {"database": TARGET_DB, "container": "orders-scratch"}
    assert report["definition_matches"] is True and report["restore_seconds"] > 0
    assert report["identity"]["client_id"] == RESTORE_CLIENT_ID and report["request_charge"] > 0
    assert report["worker_version"] and "unknown_delete_incrementals" in report
    assert report["report_key"].startswith(f"exports/test/acct/{DB}/orders/{contract.DRILLS_DIR}/")
    stored = json.loads(world["s3"].get_object(Bucket=world["bucket"], Key=report["report_key"])["Body"].read())
    assert {k: v for k, v in report.items() if k != "report_key"} == stored
    assert "eyJ" not in json.dumps(stored)  # an identity, never a token
    assert target_docs(world, "orders-scratch") == source_docs(world)
    again = drill(world)  # a second drill of the same sequence restores again (a new attempt), into a new report
    assert again["ok"] and again["report_key"] != report["report_key"]


def test_drill_detects_a_target_changed_between_restore_and_read_back(world, monkeypatch):
    state = world["state"]
    state.upsert_many(DB, "orders", make_docs(120))
    export_run(world)
    real = restore.run_restore

    def restore_then_corrupt(*args, **kwargs):
        result = real(*args, **kwargs)
        scratch = state.container(TARGET_DB, "orders-scratch")
        state.upsert(TARGET_DB, "orders-scratch", {**make_docs(1)[0], "n": "tampered"})
        scratch.delete("o-2", "k-2")
        state.upsert(TARGET_DB, "orders-scratch", {"id": "intruder", "pk": "k-1"})
        return result

    monkeypatch.setattr(restore, "run_restore", restore_then_corrupt)
    report = drill(world)
    assert report["ok"] is False
    assert (report["documents_missing"], report["documents_unexpected"], report["documents_differing"]) == (1, 1, 1)
    assert report["documents_mismatched"] == 3 and report["documents_found"] == 120
    assert report["mismatch_examples"]["differing"] == ['[["k-0"],"o-0"]']
    stored = json.loads(world["s3"].get_object(Bucket=world["bucket"], Key=report["report_key"])["Body"].read())
    assert stored["ok"] is False


class Lines:
    """Captures the worker's structured log lines (event, fields)."""

    def __init__(self):
        self.lines: list[tuple[str, dict]] = []

    def info(self, event, **fields):
        self.lines.append((event, fields))

    warning = error = info

    def bind(self, **_):
        return self


def drill_failed_values(lines: Lines) -> list[tuple[str, int]]:
    return [
        (f["Container"], f["DrillFailed"])
        for e, f in lines.lines
        if "DrillFailed" in f
        and f["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [{"Name": "DrillFailed", "Unit": "Count"}]
    ]


def test_drill_emits_drill_failed_for_the_alarm(world):
    world["state"].upsert_many(DB, "orders", make_docs(20))
    export_run(world)
    passed = Lines()
    assert drill(world, log=passed)["ok"] is True
    assert drill_failed_values(passed) == [("orders", 0)]
    world["state"].container(TARGET_DB, "orders-scratch").properties["defaultTtl"] = 60
    failed = Lines()
    assert drill(world, log=failed)["ok"] is False
    assert drill_failed_values(failed) == [("orders", 1)]


def test_drill_detects_a_target_definition_that_differs(world):
    world["state"].upsert_many(DB, "orders", make_docs(50))
    export_run(world)
    world["state"].container(TARGET_DB, "orders-scratch").properties["defaultTtl"] = 3600
    report = drill(world)
    assert report["ok"] is False and report["documents_mismatched"] == 0
    assert report["definition_differences"] == ["defaultTtl: source null, target 3600"]


def test_a_drill_that_cannot_restore_is_reported_as_failed(world):
    world["state"].upsert_many(DB, "orders", make_docs(10))
    export_run(world)
    settings = world["restore_settings"].model_copy(update={"restore_targets": (("orders", "wrong-pk"),)})
    with pytest.raises(RestoreRefused, match="partition key"):
        run_drill(settings, "orders", client=world["restore_client"], s3=world["s3"])
    listed = world["s3"].list_objects_v2(Bucket=world["bucket"], Prefix=f"exports/test/acct/{DB}/orders/drills/")
    (key,) = [o["Key"] for o in listed["Contents"]]
    report = json.loads(world["s3"].get_object(Bucket=world["bucket"], Key=key)["Body"].read())
    assert report["ok"] is False and "partition key" in report["error"]
    assert report["target"] == {"database": TARGET_DB, "container": "wrong-pk"}
    assert restore_objects(world) == [] and target_docs(world, "wrong-pk") == {}  # the target was not touched


def test_drill_without_a_scratch_mapping_is_refused(world):
    world["state"].upsert_many(DB, "orders", make_docs(10))
    export_run(world)
    settings = world["restore_settings"].model_copy(update={"restore_targets": ()})
    with pytest.raises(RestoreRefused, match="no scratch container for orders in EXPORT_RESTORE_TARGETS"):
        run_drill(settings, "orders", client=world["restore_client"], s3=world["s3"])
    assert restore_objects(world) == []


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # its certificate expired in 2021
def test_restore_into_cosmosdb_server_read_back_through_its_query_path(world, cosmosdb_server):
    """An implementation nobody here wrote: upserts only (no --exact: its change feed is a stub that stops after
    one page, and a missing item answers 500), read back with a cross-partition query, compared exactly."""
    from azure.cosmos import CosmosClient, PartitionKey

    state = world["state"]
    state.upsert_many(DB, "orders", make_docs(60))
    export_run(world)
    state.upsert_many(DB, "orders", [{**d, "n": -1} for d in make_docs(10)] + make_docs(3, tag="new"))
    export_run(world, "incremental")  # it closes the connection after every response: keep it small
    # cosmosdb-server never checks auth; this key is not a secret of any account.
    server = CosmosClient(cosmosdb_server.url, credential="c2FuZGJveA==", connection_verify=False)
    database = f"restore-{uuid.uuid4().hex[:6]}"
    server.create_database(database).create_container("orders-restore", PartitionKey(path="/pk"))
    settings = world["restore_settings"].model_copy(
        update={"cosmos_endpoint": cosmosdb_server.url + "/", "cosmos_tls_verify": False}
    )
    request = RestoreRequest(container="orders", target_container="orders-restore", target_database=database)
    result, _ = run_restore(settings, request, client=server, s3=world["s3"])
    assert result.documents == result.documents_upserted == 63
    container = server.get_database_client(database).get_container_client("orders-restore")
    read_back = list(container.query_items("SELECT * FROM c", enable_cross_partition_query=True))
    # A JavaScript server keeps numbers as doubles (as Cosmos DB does): 2**64 + i comes back rounded.
    as_doubles = lambda docs: {k: {**v, "big": float(v["big"])} for k, v in docs.items()}  # noqa: E731
    assert len(read_back) == 63 and as_doubles(by_key(read_back)) == as_doubles(source_docs(world))
    assert progress_of(world, result)["status"] == "complete"
