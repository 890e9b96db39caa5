"""Management routes (account key only), gateway-served cross-partition queries and `_self` links."""

from __future__ import annotations

import base64
import secrets

import pytest
from azure.cosmos import PartitionKey, exceptions

from cosmos_export import contract
from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
from sandbox.doubles.cosmos.rbac import RoleAssignment
from sandbox.doubles.cosmos.testing import JwtCredential, TestTokenIssuer, sdk_client

OID = "5f0c2b1e-0d7a-4a52-9a55-3b3c8a9d1e20"
FULL_ACCESS = ("Microsoft.DocumentDB/databaseAccounts/*",)  # every data action, at account scope


@pytest.fixture()
def account(local_ca):
    issuer = TestTokenIssuer()
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    state = CosmosGatewayState(
        "acct",
        token_verifier=issuer.verify,
        master_key=key,
        role_assignments=[RoleAssignment(OID, "/", FULL_ACCESS)],
    )
    with serve_cosmos(state, local_ca) as served:
        yield state, served, key, JwtCredential(issuer, OID)


def test_account_key_manages_databases_containers_and_offers(account, local_ca):
    state, served, key, _ = account
    client = sdk_client(served.url, key, local_ca)
    database = client.create_database("db1")
    container = database.create_container(
        "events", PartitionKey(path=["/tenant", "/user"], kind="MultiHash"), offer_throughput=12000, default_ttl=60
    )
    props = container.read()
    assert props["partitionKey"] == {"paths": ["/tenant", "/user"], "kind": "MultiHash", "version": 2}
    assert props["defaultTtl"] == 60
    assert len(state.container("db1", "events").ranges) == 2  # 12000 RU/s: two physical partitions
    assert container.get_throughput().offer_throughput == 12000
    container.replace_throughput(14000)
    assert container.get_throughput().offer_throughput == 14000
    assert [c["id"] for c in database.list_containers()] == ["events"]
    with pytest.raises(exceptions.CosmosResourceExistsError):
        database.create_container("events", PartitionKey(path="/x"))
    with pytest.raises(exceptions.CosmosHttpResponseError) as bad:
        database.create_container("four", PartitionKey(path=["/a", "/b", "/c", "/d"], kind="MultiHash"))
    assert bad.value.status_code == 400 and "Too many partition key paths" in bad.value.message
    with pytest.raises(exceptions.CosmosHttpResponseError) as bad_ttl:
        database.create_container("ttl0", PartitionKey(path="/pk"), default_ttl=0)
    assert bad_ttl.value.status_code == 400 and "defaultTtl 0" in bad_ttl.value.message
    assert "ttl0" not in state.databases["db1"].containers  # refused before anything was created
    database.delete_container("events")
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        container.read()
    client.delete_database("db1")
    assert "db1" not in state.databases


def test_wrong_account_key_is_refused(account, local_ca):
    _, served, _, _ = account
    other = base64.b64encode(secrets.token_bytes(64)).decode()
    with pytest.raises(exceptions.CosmosHttpResponseError) as refused:
        sdk_client(served.url, other, local_ca).create_database("db1")
    assert refused.value.status_code == 401 and "wrong key" in refused.value.message


def test_aad_token_cannot_manage_even_with_every_data_action(account, local_ca):
    state, served, key, credential = account
    sdk_client(served.url, key, local_ca).create_database("db1").create_container("c", PartitionKey(path="/pk"))
    aad = sdk_client(served.url, credential, local_ca)
    with pytest.raises(exceptions.CosmosHttpResponseError) as create:
        aad.create_database("db2")
    assert (create.value.status_code, create.value.sub_status) == (403, 5300)
    assert "The given request [POST /dbs] cannot be authorized by AAD token in data plane" in create.value.message
    database = aad.get_database_client("db1")
    for attempt in (
        lambda: database.create_container("c2", PartitionKey(path="/pk")),
        lambda: database.delete_container("c"),
        lambda: aad.delete_database("db1"),
        lambda: database.get_container_client("c").get_throughput(),
    ):
        with pytest.raises(exceptions.CosmosHttpResponseError) as refused:
            attempt()
        assert (refused.value.status_code, refused.value.sub_status) == (403, 5300)
    assert list(state.databases) == ["db1"] and list(state.databases["db1"].containers) == ["c"]
    # Data-plane operations with the same token still work: the refusal is about management only.
    container = database.get_container_client("c")
    container.upsert_item({"id": "1", "pk": "a"})
    assert container.read_item("1", "a")["id"] == "1"
    assert set(contract.COSMOS_DATA_ACTIONS)  # the export role holds data actions only


@pytest.fixture()
def open_container(local_ca):
    state = CosmosGatewayState("acct")
    state.create_container("db", "c", feed_ranges=4)
    state.upsert_many("db", "c", ({"id": f"d{i}", "pk": f"p{i % 31}", "n": i} for i in range(300)))
    with serve_cosmos(state, local_ca) as served:
        client = sdk_client(served.url, base64.b64encode(b"any key: no auth configured").decode(), local_ca)
        yield state, client.get_database_client("db").get_container_client("c")


def test_gateway_serves_streaming_cross_partition_queries_and_resumes(open_container):
    state, container = open_container
    pages = container.query_items(
        "SELECT * FROM c WHERE c.n >= 10", enable_cross_partition_query=True, max_item_count=40
    ).by_page()
    first = list(next(pages))
    token = pages.continuation_token
    assert len(first) == 40 and token
    resumed = container.query_items(
        "SELECT * FROM c WHERE c.n >= 10", enable_cross_partition_query=True, max_item_count=40
    ).by_page(token)
    rest = [doc for page in resumed for doc in page]
    ids = [d["id"] for d in first + rest]
    assert len(ids) == len(set(ids)) == 290  # resumed where it stopped: nothing repeated, nothing lost
    # The gateway served it: no query plan was asked for, and no query was refused.
    stats = state.stats_dict()
    assert "queryplan" not in stats and set(stats["query"]) == {"200"}


def test_continuation_survives_a_split_between_pages(open_container):
    state, container = open_container
    pages = container.query_items("SELECT * FROM c", enable_cross_partition_query=True, max_item_count=25).by_page()
    first = list(next(pages))
    token = pages.continuation_token
    state.split("db", "c", "0")
    rest = [
        d
        for page in container.query_items(
            "SELECT * FROM c", enable_cross_partition_query=True, max_item_count=25
        ).by_page(token)
        for d in page
    ]
    assert sorted(d["id"] for d in first + rest) == sorted(f"d{i}" for i in range(300))


def test_count_across_partitions_still_goes_through_the_plan(open_container):
    state, container = open_container
    assert list(container.query_items("SELECT VALUE COUNT(1) FROM c", enable_cross_partition_query=True)) == [300]
    assert state.stats_dict()["query"]["400"] == 1  # 400/1004 once, then the plan's per-range queries


def test_delete_item_by_its_self_link(open_container):
    state, container = open_container
    item = container.read_item("d5", "p5")
    container.delete_item(item, partition_key="p5")
    assert state.container("db", "c").read("d5", "p5") is None
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        container.delete_item(item, partition_key="p5")


def test_hash_v1_container_spreads_documents_and_routes_by_the_sdk_hash(account, local_ca):
    state, served, key, _ = account
    database = sdk_client(served.url, key, local_ca).create_database("legacy")
    container = database.create_container("v1", PartitionKey(path="/pk", version=1), offer_throughput=24000)
    assert container.read()["partitionKey"] == {"paths": ["/pk"], "kind": "Hash", "version": 1}
    for i in range(200):
        container.upsert_item({"id": f"d{i}", "pk": f"k{i % 20}", "n": i})
    ranges = state.container("legacy", "v1").ranges
    assert len(ranges) == 4 and sum(1 for r in ranges if r.docs) == 4  # V1 bounds spread the "05..." EPKs
    assert container.read_item("d7", "k7")["n"] == 7
    changes = list(container.query_items_change_feed(is_start_from_beginning=True, partition_key="k7"))
    assert sorted(c["id"] for c in changes) == sorted(f"d{i}" for i in range(7, 200, 20))
