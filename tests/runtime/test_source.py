"""source.py against the Cosmos gateway double (change feed) and @vercel/cosmosdb-server (query path)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.cosmos import CosmosClient

from cosmos_export import contract, source
from cosmos_export.settings import WorkerSettings
from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
from sandbox.doubles.cosmos.rbac import RoleAssignment
from sandbox.doubles.cosmos.testing import JwtCredential, TestTokenIssuer

DB, COLL = "shop", "orders"
OID = "7d3c1a52-7f1e-4c7e-9a3b-0f2f6f1c2b11"
SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")


def make_docs(n: int, *, offset: int = 0) -> list[dict]:
    return [{"id": f"o-{i}", "pk": f"customer-{i % 97}", "n": i, "s": "é" * (i % 3)} for i in range(offset, offset + n)]


def user(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in SYSTEM}


def settings_for(url: str, tls_verify, **overrides) -> WorkerSettings:
    values = dict(
        identity_mode="workload",
        aws_region="eu-west-1",
        azure_tenant_id="11111111-2222-3333-4444-555555555555",
        azure_client_id="22222222-2222-3333-4444-555555555555",
        cosmos_endpoint=url,
        cosmos_account="acct",
        cosmos_database=DB,
        cosmos_containers=COLL,
        cosmos_tls_verify=tls_verify,
        bucket="export-bucket",
        page_size=50,
    )
    values.update(overrides)
    return WorkerSettings(**values)


@pytest.fixture()
def gateway(local_ca):
    issuer = TestTokenIssuer()
    state = CosmosGatewayState(
        "acct",
        token_verifier=issuer.verify,
        role_assignments=[RoleAssignment(OID, f"/dbs/{DB}/colls/{COLL}", contract.COSMOS_DATA_ACTIONS)],
    )
    state.create_container(DB, COLL)
    with serve_cosmos(state, local_ca) as served:
        settings = settings_for(served.url, str(local_ca.bundle_file))
        client = source.cosmos_client(settings, JwtCredential(issuer, OID))
        yield state, settings, client


def read_all(container, settings, feed_range, **kwargs):
    reader = source.FeedRangeReader(container, feed_range, settings)
    pages = list(reader.change_feed(**kwargs))
    return [d for p in pages for d in p.docs], reader.continuation, pages


def test_concurrent_readers_on_one_client_keep_their_own_continuations(gateway):
    state, settings, client = gateway
    docs = make_docs(1500)
    state.upsert_many(DB, COLL, docs)
    container = source.container_client(client, DB, COLL)
    ranges = source.feed_ranges(container)
    assert len(ranges) == 4
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda fr: read_all(container, settings, fr), ranges))
    seen = [d["id"] for items, _, _ in results for d in items]
    assert sorted(seen) == sorted(d["id"] for d in docs) and len(seen) == len(set(seen))
    for _, _, pages in results:  # every page is audited with its own charge and activity id
        assert all(p.activity_id and p.request_charge > 0 and len(p.docs) <= 50 for p in pages)

    # Change one doc per range; each saved continuation (taken concurrently) returns only its own range's change.
    changed = {}
    for i, fr in enumerate(ranges):
        doc = next(
            d for d in docs if container.is_feed_range_subset(fr, container.feed_range_from_partition_key(d["pk"]))
        )
        changed[i] = {**doc, "n": -1}
    state.upsert_many(DB, COLL, list(changed.values()))

    def resume(i):
        return read_all(container, settings, None, continuation=results[i][1])[0]

    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(resume, range(4)))
    assert [[user(d) for d in items] for items in again] == [[changed[i]] for i in range(4)]


def test_continuation_survives_a_split(gateway):
    state, settings, client = gateway
    docs = make_docs(600)
    state.upsert_many(DB, COLL, docs)
    container = source.container_client(client, DB, COLL)
    ranges = source.feed_ranges(container)
    conts = [read_all(container, settings, fr)[1] for fr in ranges]
    state.split(DB, COLL)
    assert len(source.feed_ranges(container)) == 5
    later = [{**d, "n": -d["n"]} for d in docs[:80]]
    state.upsert_many(DB, COLL, later)
    got = [d for c in conts for d in read_all(container, settings, None, continuation=c)[0]]
    assert sorted((user(d) for d in got), key=lambda d: d["id"]) == sorted(later, key=lambda d: d["id"])


def test_transient_errors_are_retried_from_the_last_continuation(gateway, monkeypatch):
    state, settings, client = gateway
    monkeypatch.setattr(source, "RETRY_SECONDS", 20)
    monkeypatch.setattr(source, "RETRY_WAIT_MAX_SECONDS", 0.5)
    state.upsert_many(DB, COLL, make_docs(300))
    container = source.container_client(client, DB, COLL)
    fr = source.feed_ranges(container)[0]
    expected = [d["id"] for d in read_all(container, settings, fr)[0]]
    assert len(expected) > 50  # several pages of 50

    pages = source.FeedRangeReader(container, fr, settings).change_feed(start_time="Beginning")
    got = [d["id"] for d in next(pages).docs]
    # Mid-stream: the role assignment "disappears" (403/5300) for 2 s, then two 503s.
    state.not_propagated_for(2.0)
    state.unavailable_next(2, operation="changefeed.read")
    got += [d["id"] for page in pages for d in page.docs]
    assert got == expected  # resumed from the last page's continuation: nothing lost, nothing twice
    stats = state.stats_dict()["changefeed.read"]
    assert stats.get("403", 0) >= 1 and stats.get("503", 0) == 2


def test_retrying_reads_the_module_constants_at_call_time(monkeypatch):
    import time

    from azure.cosmos import exceptions

    monkeypatch.setattr(source, "RETRY_ATTEMPTS", 3)
    monkeypatch.setattr(source, "RETRY_WAIT_MAX_SECONDS", 0.05)
    calls = []

    def unavailable():
        calls.append(time.monotonic())
        raise exceptions.CosmosHttpResponseError(status_code=503, message="Service Unavailable")

    began = time.monotonic()
    with pytest.raises(exceptions.CosmosHttpResponseError):
        for attempt in source.retrying():
            with attempt:
                unavailable()
    assert len(calls) == 3 and time.monotonic() - began < 1.0
    monkeypatch.setattr(source, "RETRY_SECONDS", 0.0)  # the budget, too: one try, no wait
    calls.clear()
    with pytest.raises(exceptions.CosmosHttpResponseError):
        for attempt in source.retrying():
            with attempt:
                unavailable()
    assert len(calls) == 1


def test_missing_permission_fails_loudly_with_the_action(local_ca):
    issuer = TestTokenIssuer()
    actions = tuple(a for a in contract.COSMOS_DATA_ACTIONS if not a.endswith("readChangeFeed"))
    state = CosmosGatewayState(
        "acct", token_verifier=issuer.verify, role_assignments=[RoleAssignment(OID, f"/dbs/{DB}", actions)]
    )
    state.create_container(DB, COLL)
    with serve_cosmos(state, local_ca) as served:
        settings = settings_for(served.url, str(local_ca.bundle_file))
        client = source.cosmos_client(settings, JwtCredential(issuer, OID))
        container = source.container_client(client, DB, COLL)
        with pytest.raises(Exception) as err:
            read_all(container, settings, source.feed_ranges(container)[0])
    message = source.explain_cosmos_error(err.value, settings)
    assert message.startswith("Cosmos refused the request (403/5301)")
    assert "readChangeFeed" in message and "cosmos-s3-export:cosmosContainers" in message


@pytest.mark.parametrize(
    "level,minimum,ok",
    [("Session", "Session", True), ("Eventual", "Session", False), ("Strong", "BoundedStaleness", True)],
)
def test_consistency_check(local_ca, level, minimum, ok):
    issuer = TestTokenIssuer()
    state = CosmosGatewayState(
        "acct",
        consistency=level,
        token_verifier=issuer.verify,
        role_assignments=[RoleAssignment(OID, "/", contract.COSMOS_DATA_ACTIONS)],
    )
    with serve_cosmos(state, local_ca) as served:
        client = source.cosmos_client(settings_for(served.url, str(local_ca.bundle_file)), JwtCredential(issuer, OID))
        if ok:
            assert source.check_consistency(client, minimum) == level
        else:
            with pytest.raises(source.SourceError) as err:
                source.check_consistency(client, minimum)
            assert str(err.value).startswith(
                f"account consistency {level} is weaker than the required minimum {minimum} (EXPORT_MIN_CONSISTENCY)"
            )


#: cosmosdb-server never checks auth; the SDK only needs some base64 key to sign with.
UNCHECKED_KEY = "bm90LWEtc2VjcmV0LWNvc21vc2RiLXNlcnZlci1jaGVja3Mgbm8gYXV0aA=="


def test_query_snapshot_against_cosmosdb_server(cosmosdb_server):
    """The query path (with and without a WHERE filter) against an independent implementation."""
    admin = CosmosClient(cosmosdb_server.url, credential=UNCHECKED_KEY, connection_verify=False)
    db = admin.create_database_if_not_exists("qdb")
    name = f"q{threading.get_ident()}"
    coll = db.create_container_if_not_exists(name, partition_key=__import__("azure.cosmos").cosmos.PartitionKey("/pk"))
    docs = make_docs(130)
    for d in docs:
        coll.upsert_item(d)
    settings = settings_for(
        cosmosdb_server.url, False, cosmos_database="qdb", cosmos_containers=name, snapshot_source="query"
    )
    client = CosmosClient(cosmosdb_server.url, credential=UNCHECKED_KEY, connection_verify=False)
    container = source.container_client(client, "qdb", name)
    ranges = source.feed_ranges(container)
    pages = [p for fr in ranges for p in source.FeedRangeReader(container, fr, settings).query()]
    assert sorted(user(d)["id"] for p in pages for d in p.docs) == sorted(d["id"] for d in docs)
    assert [len(p.docs) for p in pages] == [50, 50, 30]  # paged by max_item_count
    filtered = [
        d for fr in ranges for p in source.FeedRangeReader(container, fr, settings).query("c.n >= 100") for d in p.docs
    ]
    assert sorted(map(user, filtered), key=lambda d: d["n"]) == docs[100:]


@pytest.mark.parametrize(
    "status,sub_status,transient",
    [
        (403, 5300, True),
        (503, 0, True),
        (403, 5301, False),
        (401, 0, False),
        (400, 0, False),
        (500, 0, False),
        (404, 0, False),
    ],
)
def test_only_propagation_unavailable_and_resets_are_retried(status, sub_status, transient):
    from azure.core.exceptions import ServiceResponseError
    from azure.cosmos import exceptions

    error = exceptions.CosmosHttpResponseError(status_code=status, message="x")
    error.sub_status = sub_status
    assert source.is_transient(error) is transient
    assert source.is_transient(ServiceResponseError("Connection reset by peer")) is True
    assert source.is_transient(ValueError("bad")) is False
