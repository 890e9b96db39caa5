"""The Cosmos gateway double against the unmodified azure-cosmos SDK over HTTPS."""

from __future__ import annotations

import json
import random

import pytest
from azure.cosmos import exceptions
from azure.cosmos.partition_key import PartitionKey

from cosmos_export import contract
from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
from sandbox.doubles.cosmos.rbac import ITEMS, READ_CHANGE_FEED, RoleAssignment
from sandbox.doubles.cosmos.store import effective_partition_key
from sandbox.doubles.cosmos.testing import JwtCredential, TestTokenIssuer, sdk_client

DB, COLL = "shop", "orders"
OID = "7d3c1a52-7f1e-4c7e-9a3b-0f2f6f1c2b11"
SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")


def make_docs(n: int, *, offset: int = 0) -> list[dict]:
    return [
        {
            "id": f"o-{i}",
            "pk": f"customer-{i % 97}",
            "n": i,
            "tags": ["a", i % 3],
            "nested": {"x": i * 0.5, "s": "é" * (i % 4)},
        }
        for i in range(offset, offset + n)
    ]


def user_fields(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in SYSTEM}


@pytest.fixture()
def issuer() -> TestTokenIssuer:
    return TestTokenIssuer()


@pytest.fixture()
def gateway(local_ca, issuer):
    state = CosmosGatewayState(
        "acct",
        token_verifier=issuer.verify,
        role_assignments=[
            RoleAssignment(OID, f"/dbs/{DB}/colls/{COLL}", contract.COSMOS_DATA_ACTIONS),
            RoleAssignment(OID, f"/dbs/{DB}", (f"{ITEMS}/*",)),
        ],
    )
    state.create_container(DB, COLL)
    with serve_cosmos(state, local_ca) as served:
        yield state, served


@pytest.fixture()
def container(gateway, local_ca, issuer):
    state, served = gateway
    client = sdk_client(served.url, JwtCredential(issuer, OID), local_ca)
    return client.get_database_client(DB).get_container_client(COLL)


def drain(container, feed_range, *, page_size: int = 50, continuation: str | None = None):
    """Every item of one feed range from Beginning (or a continuation) and the continuation afterwards."""
    kwargs = {"continuation": continuation} if continuation else {"feed_range": feed_range, "start_time": "Beginning"}
    pages = container.query_items_change_feed(max_item_count=page_size, priority="Low", **kwargs).by_page()
    items = [item for page in pages for item in page]
    return items, pages.continuation_token or continuation


def test_epk_is_the_sdk_value_for_many_keys():
    rnd = random.Random(7)
    values = ["", "a", "ü" * 60, 0, 1, -3, 2**40, 3.25, True, False, None] + [
        "".join(rnd.choice("abcxyz0189-_") for _ in range(rnd.randint(1, 40))) for _ in range(300)
    ]
    for value in values:
        assert effective_partition_key(value) == PartitionKey._get_effective_partition_key_for_hash_partitioning_v2(
            [value]
        ), value


def test_account_and_container_metadata(gateway, container):
    state, served = gateway
    account = container.client_connection._global_endpoint_manager._GetDatabaseAccount()  # what the SDK cached
    assert account.ConsistencyPolicy == {"defaultConsistencyLevel": "Session"}
    assert [loc["databaseAccountEndpoint"] for loc in account.WritableLocations] == [served.url + "/"]
    props = container.read()
    assert props["partitionKey"] == {"paths": ["/pk"], "kind": "Hash", "version": 2}
    assert props["_rid"] == state.container(DB, COLL).rid


def test_drain_each_feed_range_from_beginning_returns_every_doc_once(gateway, container):
    state, _ = gateway
    docs = make_docs(1200)
    state.upsert_many(DB, COLL, docs)
    ranges = list(container.read_feed_ranges())
    assert len(ranges) == 4
    seen: dict[str, dict] = {}
    for feed_range in ranges:
        items, _ = drain(container, feed_range)
        assert items, "every range of 1200 docs over 97 keys gets some"
        for item in items:
            assert item["id"] not in seen, f"{item['id']} returned twice"
            seen[item["id"]] = item
            # The document lands in the range the SDK itself computes for its partition key.
            assert container.is_feed_range_subset(feed_range, container.feed_range_from_partition_key(item["pk"]))
            assert isinstance(item["_lsn"], int) and isinstance(item["_ts"], int)
            assert item["_self"].endswith(f"docs/{item['_rid']}/") and item["_etag"].startswith('"')
    assert {k: user_fields(v) for k, v in seen.items()} == {d["id"]: d for d in docs}


def test_continuation_returns_only_changed_docs_then_nothing(gateway, container):
    state, _ = gateway
    state.upsert_many(DB, COLL, make_docs(300))
    continuations = [drain(container, fr)[1] for fr in container.read_feed_ranges()]

    # Nothing changed: every range answers 304, the SDK yields nothing.
    before = state.stats_dict()["changefeed.read"].get("304", 0)
    assert [drain(container, None, continuation=c)[0] for c in continuations] == [[], [], [], []]
    assert state.stats_dict()["changefeed.read"]["304"] == before + 4

    changed = [{"id": "o-5", "pk": "customer-5", "n": -5}, {"id": "o-new", "pk": "someone", "n": 1}]
    for doc in changed:
        container.upsert_item(doc)
    container.delete_item("o-7", partition_key="customer-7")  # LatestVersion: deletes are not in the feed
    got = []
    for cont in continuations:
        got.extend(drain(container, None, continuation=cont)[0])
    assert sorted(map(user_fields, got), key=lambda d: d["id"]) == changed


def test_split_mid_drain_and_old_continuation_still_return_every_doc_once(gateway, container):
    state, _ = gateway
    docs = make_docs(800)
    state.upsert_many(DB, COLL, docs)
    ranges = list(container.read_feed_ranges())
    before_split = [drain(container, fr)[1] for fr in ranges]  # continuations at the current end

    # Read the fullest range halfway, split it, then go on with the same iterator.
    target = max(ranges, key=lambda fr: len(drain(container, fr)[0]))
    pages = container.query_items_change_feed(feed_range=target, start_time="Beginning", max_item_count=40).by_page()
    first = list(next(pages)) + list(next(pages))
    target_range_id = state.container(DB, COLL).ranges[[json.dumps(fr) for fr in ranges].index(json.dumps(target))].id
    children = state.split(DB, COLL, target_range_id)
    rest = [item for page in pages for item in page]
    ids = [d["id"] for d in first + rest]
    expected = {
        d["id"]
        for d in docs
        if container.is_feed_range_subset(target, container.feed_range_from_partition_key(d["pk"]))
    }
    assert len(ids) == len(set(ids)) == len(expected) and set(ids) == expected
    assert state.stats_dict()["changefeed.read"]["410"] >= 1  # the SDK hit the gone range and recovered
    assert len(list(container.read_feed_ranges())) == 5 and len(children) == 2

    # A continuation taken before the split sees each later change once, wherever it now lives.
    later = [{"id": d["id"], "pk": d["pk"], "n": -d["n"]} for d in docs[:60]]
    state.upsert_many(DB, COLL, later)
    got = [item for cont in before_split for item in drain(container, None, continuation=cont)[0]]
    assert sorted(map(user_fields, got), key=lambda d: d["id"]) == sorted(later, key=lambda d: d["id"])

    # A full drain after the split still returns every document exactly once.
    all_ids = [item["id"] for fr in container.read_feed_ranges() for item in drain(container, fr)[0]]
    assert sorted(all_ids) == sorted(d["id"] for d in docs)


def test_throttling_is_retried_by_the_sdk(gateway, container):
    state, _ = gateway
    state.upsert_many(DB, COLL, make_docs(100))
    state.throttle_next(3, retry_after_ms=5, operation="changefeed.read")
    total = sum(len(drain(container, fr)[0]) for fr in container.read_feed_ranges())
    assert total == 100
    assert state.stats_dict()["changefeed.read"]["429"] == 3


def test_service_unavailable_and_connection_reset_are_retried(gateway, container):
    state, _ = gateway
    state.upsert_many(DB, COLL, make_docs(50))
    feed_range = list(container.read_feed_ranges())[0]
    expected = len(drain(container, feed_range)[0])
    state.unavailable_next(1, operation="changefeed.read")
    state.reset_next(1, operation="changefeed.read")
    assert len(drain(container, feed_range)[0]) == expected
    stats = state.stats_dict()["changefeed.read"]
    assert stats["503"] == 1 and stats["0"] == 1  # "0" = reset mid-response


def test_not_modified_window_keeps_existing_documents_and_holds_back_new_ones(gateway, container):
    """The fault models a lagging range ("nothing changed since your continuation"), never hidden data."""
    state, _ = gateway
    state.upsert_many(DB, COLL, make_docs(400))
    rng = state.container(DB, COLL).ranges[0]
    feed_range = next(fr for fr in container.read_feed_ranges() if fr["Range"]["min"] == rng.min)
    before = {d["id"] for d in drain(container, feed_range)[0]}
    assert before == {json.loads(e.body)["id"] for e in rng.docs.values()} and before

    state.not_modified_for(DB, COLL, rng.id, seconds=30)
    # From the beginning, every document already there is returned; the continuation is at the frozen head.
    items, frozen_head = drain(container, feed_range)
    assert {d["id"] for d in items} == before
    # Writes during the window (updates and inserts in this range) stay invisible: 304, same continuation.
    later = [
        d
        for d in make_docs(400, offset=1000) + [{**d, "n": -1} for d in make_docs(400)[::2]]
        if rng.contains(effective_partition_key(d["pk"]))
    ]
    state.upsert_many(DB, COLL, later)
    untouched = before - {d["id"] for d in later}
    assert later and untouched
    assert drain(container, feed_range, continuation=frozen_head) == ([], frozen_head)
    # The double keeps only each document's last version, so a changed one is not shown until the window ends.
    assert {d["id"] for d in drain(container, feed_range)[0]} == untouched
    assert state.stats_dict()["changefeed.read"]["304"] >= 1

    state.clear_faults()
    after, _ = drain(container, feed_range, continuation=frozen_head)
    assert sorted((user_fields(d) for d in after), key=lambda d: (d["id"], d["n"])) == sorted(
        later, key=lambda d: (d["id"], d["n"])
    )  # each held-back write exactly once, in its last version


def test_missing_read_change_feed_is_403_5301_naming_action_and_principal(local_ca, issuer):
    actions = tuple(a for a in contract.COSMOS_DATA_ACTIONS if a != READ_CHANGE_FEED)
    state = CosmosGatewayState(
        "acct", token_verifier=issuer.verify, role_assignments=[RoleAssignment(OID, f"/dbs/{DB}", actions)]
    )
    state.create_container(DB, COLL)
    state.upsert_many(DB, COLL, make_docs(10))
    with serve_cosmos(state, local_ca) as served:
        container = (
            sdk_client(served.url, JwtCredential(issuer, OID), local_ca)
            .get_database_client(DB)
            .get_container_client(COLL)
        )
        assert container.read()["id"] == COLL  # readMetadata is granted
        with pytest.raises(exceptions.CosmosHttpResponseError) as err:
            drain(container, list(container.read_feed_ranges())[0])
    assert err.value.status_code == 403 and err.value.sub_status == 5301
    assert (
        f"principal [{OID}] does not have required RBAC permissions to perform action "
        f"[{READ_CHANGE_FEED}] on resource [/dbs/{DB}/colls/{COLL}]"
    ) in err.value.message


def test_not_propagated_yet_is_403_5300_then_works(local_ca, issuer):
    state = CosmosGatewayState(
        "acct",
        token_verifier=issuer.verify,
        rbac_propagation_seconds=60,
        role_assignments=[RoleAssignment(OID, "/", contract.COSMOS_DATA_ACTIONS)],
    )
    state.create_container(DB, COLL)
    with serve_cosmos(state, local_ca) as served:
        with pytest.raises(exceptions.CosmosHttpResponseError) as err:
            sdk_client(served.url, JwtCredential(issuer, OID), local_ca)
        state.rbac_propagation_seconds = 0
        client = sdk_client(served.url, JwtCredential(issuer, OID), local_ca)
        assert client.get_database_client(DB).get_container_client(COLL).read()["id"] == COLL
    assert err.value.status_code == 403 and err.value.sub_status == 5300


@pytest.mark.parametrize(
    "audience,lifetime,why",
    [
        ("https://cosmos.azure.com", 3600, "Audience doesn't match"),
        (None, -420, "Signature has expired"),  # expired beyond the 300 s clock leeway
    ],
)
def test_bad_token_is_401(local_ca, issuer, audience, lifetime, why):
    state = CosmosGatewayState(
        "acct", token_verifier=issuer.verify, role_assignments=[RoleAssignment(OID, "/", contract.COSMOS_DATA_ACTIONS)]
    )
    with serve_cosmos(state, local_ca) as served:
        credential = JwtCredential(issuer, OID, audience=audience, lifetime=lifetime)
        with pytest.raises(exceptions.CosmosHttpResponseError) as err:
            sdk_client(served.url, credential, local_ca)
    assert err.value.status_code == 401
    assert why in err.value.message and "eyJ" not in err.value.message  # reason given, token never echoed
    # The SDK asks for <scheme>://<hostname>/.default: the port is dropped.
    assert credential.scopes[0] == ("https://127.0.0.1/.default",)


def test_point_operations_through_the_sdk(container):
    created = container.create_item({"id": "p1", "pk": "k", "v": 1})
    assert created["_rid"] and created["v"] == 1
    with pytest.raises(exceptions.CosmosResourceExistsError):
        container.create_item({"id": "p1", "pk": "k", "v": 2})
    container.upsert_item({"id": "p1", "pk": "k", "v": 3})
    assert container.read_item("p1", partition_key="k")["v"] == 3
    container.replace_item("p1", {"id": "p1", "pk": "k", "v": 4})
    assert container.read_item("p1", partition_key="k")["v"] == 4
    container.delete_item("p1", partition_key="k")
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        container.read_item("p1", partition_key="k")
