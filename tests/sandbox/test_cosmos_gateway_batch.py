"""Transactional batch in the gateway double, through the unmodified SDK's `execute_item_batch`: what Cosmos
does (one logical partition, at most 100 operations, atomic, 207 with the failed operation's status and 424
for the others, the operations' charge) and where it says no, with nothing written."""

from __future__ import annotations

import pytest
from azure.cosmos import exceptions

from cosmos_export import contract
from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
from sandbox.doubles.cosmos.rbac import ITEM_READ, ITEM_UPSERT, READ_METADATA, RoleAssignment
from sandbox.doubles.cosmos.testing import JwtCredential, TestTokenIssuer, sdk_client

DB, COLL = "shop", "orders"
OID, UPSERT_ONLY_OID = "7d3c1a52-7f1e-4c7e-9a3b-0f2f6f1c2b11", "5b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")


def doc(i: int, pk: str = "c-1", **extra) -> dict:
    return {"id": f"o-{i}", "pk": pk, "n": i, "nested": {"v": [i, None]}, **extra}


def stored(state: CosmosGatewayState) -> dict[str, dict]:
    return {
        d["id"]: {k: v for k, v in d.items() if k not in SYSTEM} for d in state.container(DB, COLL).iter_documents()
    }


@pytest.fixture()
def world(local_ca):
    issuer = TestTokenIssuer()
    state = CosmosGatewayState(
        "acct",
        token_verifier=issuer.verify,
        role_assignments=[
            RoleAssignment(OID, f"/dbs/{DB}/colls/{COLL}", contract.COSMOS_RESTORE_DATA_ACTIONS),
            RoleAssignment(UPSERT_ONLY_OID, f"/dbs/{DB}/colls/{COLL}", (READ_METADATA, ITEM_READ, ITEM_UPSERT)),
        ],
    )
    state.create_container(DB, COLL)
    with serve_cosmos(state, local_ca) as served:

        def container(oid: str = OID):
            client = sdk_client(served.url, JwtCredential(issuer, oid), local_ca)
            return client.get_database_client(DB).get_container_client(COLL)

        yield state, container


def test_a_batch_applies_every_operation_in_order_and_charges_their_sum(world):
    state, container = world
    state.upsert(DB, COLL, doc(1, n_old=True))
    state.upsert(DB, COLL, doc(2))
    headers: dict = {}
    results = container().execute_item_batch(
        [
            ("upsert", (doc(1),)),  # replaces
            ("create", (doc(3),)),
            ("replace", ("o-3", doc(3, replaced=True))),
            ("delete", ("o-2",)),
            ("read", ("o-3",)),
            ("upsert", (doc(4),)),
        ],
        partition_key="c-1",
        priority="Low",
        response_hook=lambda h, _r: headers.update(h),
    )
    assert [r["statusCode"] for r in results] == [200, 201, 200, 204, 200, 201]
    assert results[4]["resourceBody"]["replaced"] is True  # the read sees the batch's own earlier write
    assert stored(state) == {"o-1": doc(1), "o-3": doc(3, replaced=True), "o-4": doc(4)}
    charges = [r["requestCharge"] for r in results]
    assert float(headers["x-ms-request-charge"]) == pytest.approx(sum(charges), abs=0.01)
    assert charges[0] == pytest.approx(5.71) and charges[4] == 1.0
    assert state.priority_levels("item.batch") == {"Low": 1} and state.stats[("item.batch", 200)] == 1
    assert state.stats[("batch.upsert", 201)] == 1 and state.stats[("batch.delete", 204)] == 1  # per operation


def test_101_operations_are_refused_and_nothing_is_written(world):
    state, container = world
    with pytest.raises(exceptions.CosmosHttpResponseError) as refused:
        container().execute_item_batch([("upsert", (doc(i),)) for i in range(101)], partition_key="c-1")
    assert refused.value.status_code == 400 and "more operations (101)" in refused.value.message
    assert stored(state) == {}
    results = container().execute_item_batch([("upsert", (doc(i),)) for i in range(100)], partition_key="c-1")
    assert len(results) == 100 and len(stored(state)) == 100  # 100 is the limit, not 99


def test_a_request_over_2_mb_is_refused_with_413(world):
    state, container = world
    big = "x" * (100 * 1024)
    with pytest.raises(exceptions.CosmosHttpResponseError) as refused:
        container().execute_item_batch([("upsert", (doc(i, blob=big),)) for i in range(21)], partition_key="c-1")
    assert refused.value.status_code == 413 and stored(state) == {}


def test_mixed_partition_keys_fail_the_whole_batch(world):
    state, container = world
    with pytest.raises(exceptions.CosmosBatchOperationError) as failed:
        container().execute_item_batch(
            [("upsert", (doc(1),)), ("upsert", (doc(2, pk="c-2"),)), ("upsert", (doc(3),))], partition_key="c-1"
        )
    assert failed.value.error_index == 1 and failed.value.status_code == 400
    assert [r["statusCode"] for r in failed.value.operation_responses] == [424, 400, 424]
    assert "doesn't match" in failed.value.operation_responses[1]["message"]
    assert stored(state) == {} and state.stats[("item.batch", 207)] == 1
    assert not any(op.startswith("batch.") for op, _ in state.stats)  # no operation applied


@pytest.mark.parametrize(
    "failing,status",
    [(("create", (doc(9),)), 409), (("replace", ("o-404", doc(404))), 404), (("delete", ("o-404",)), 404)],
    ids=["create-existing", "replace-missing", "delete-missing"],
)
def test_a_failing_operation_rolls_the_batch_back(world, failing, status):
    state, container = world
    state.upsert(DB, COLL, doc(9))
    state.upsert(DB, COLL, doc(8))
    before = stored(state)
    with pytest.raises(exceptions.CosmosBatchOperationError) as failed:
        container().execute_item_batch(
            [("upsert", (doc(1),)), ("delete", ("o-8",)), ("upsert", (doc(9, changed=True),)), failing],
            partition_key="c-1",
        )
    assert failed.value.error_index == 3 and failed.value.status_code == status
    assert [r["statusCode"] for r in failed.value.operation_responses] == [424, 424, 424, status]
    assert stored(state) == before  # the upsert, the delete and the replace before it are not there
    assert float(failed.value.headers["x-ms-request-charge"]) > 0  # the work done is still charged


def test_each_operation_needs_its_own_data_action(world):
    state, container = world
    state.upsert(DB, COLL, doc(1))
    with pytest.raises(exceptions.CosmosHttpResponseError) as refused:
        container(UPSERT_ONLY_OID).execute_item_batch(
            [("upsert", (doc(2),)), ("delete", ("o-1",))], partition_key="c-1"
        )
    assert refused.value.status_code == 403 and "items/delete" in refused.value.message
    assert stored(state) == {"o-1": doc(1)}
    container(UPSERT_ONLY_OID).execute_item_batch([("upsert", (doc(2),))], partition_key="c-1")
    assert set(stored(state)) == {"o-1", "o-2"}


def test_a_throttled_batch_is_retried_by_the_sdk_after_retry_after(world):
    state, container = world
    state.request_log = []
    state.throttle_next(2, retry_after_ms=120, operation="item.batch")
    container().execute_item_batch([("upsert", (doc(i),)) for i in range(5)], partition_key="c-1")
    batches = [(t, status) for t, op, status, _c, _p in state.request_log if op == "item.batch"]
    assert [s for _, s in batches] == [429, 429, 200] and len(stored(state)) == 5
    assert all(b[0] - a[0] >= 0.120 - 0.005 for a, b in zip(batches, batches[1:]))
