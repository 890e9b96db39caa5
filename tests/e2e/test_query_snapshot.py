"""The same query-based snapshot against the gateway double and @vercel/cosmosdb-server, compared.

cosmosdb-server is an implementation nobody here wrote; it serves the query
path only (its change feed is a stub), which is exactly what a query snapshot
reads. The worker runs the chain of trust in both cases (cosmosdb-server ignores
the token; the gateway verifies it and its RBAC).
"""

from __future__ import annotations

import time

import pytest
from azure.cosmos import CosmosClient, exceptions

from cosmos_export import audit
from cosmos_export.export import run_export
from sandbox.plan import plan_from_run
from sandbox.seed import PARTITION_KEY_PATH, SdkSeeder, sample_documents

from .conftest import user_fields
from .test_export_chain import assert_no_secret

DOCS = 200


@pytest.fixture(scope="module")
def reference_server(cosmosdb_server, dev_run):
    """cosmosdb-server seeded once with the documents, in a fresh database named as the stack declares it."""
    plan = plan_from_run(dev_run)
    docs = list(sample_documents(DOCS))
    admin = CosmosClient(cosmosdb_server.url, credential="c2FuZGJveA==", connection_verify=False)
    try:
        admin.delete_database(plan.cosmos_database)
    except exceptions.CosmosHttpResponseError as e:  # it answers 500, not 404, for a missing resource
        assert e.status_code in (404, 500)
    seeder = SdkSeeder(cosmosdb_server.url)
    for container in plan.cosmos_containers:
        seeder.create_container(plan.cosmos_database, container, partition_key_path=PARTITION_KEY_PATH)
    assert seeder.seed(plan.cosmos_database, "orders", docs) == DOCS
    return cosmosdb_server, docs


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # its certificate expired in 2021
@pytest.mark.parametrize("where", [None, "c.status = 'shipped' AND c.total > 50"], ids=["all", "filtered"])
def test_query_snapshot_gateway_double_and_cosmosdb_server_export_the_same_documents(
    chain, reference_server, where, capsys
):
    server, docs = reference_server
    c = chain()
    audit.configure_logging("INFO")
    c.gateway.upsert_many(c.plan.cosmos_database, "orders", docs)

    common = dict(snapshot_source="query", query_filter=where)
    on_gateway = c.settings(**common)
    on_server = c.settings(**common, cosmos_endpoint=server.url + "/", cosmos_tls_verify=False)

    exported = {}
    for name, settings in (("gateway", on_gateway), ("cosmosdb-server", on_server)):
        started = time.monotonic()
        summary = run_export(settings, "snapshot")
        orders = summary.containers[0]
        assert (orders.container, orders.mode) == ("orders", "query-snapshot")
        (manifest,) = [m for m in c.manifests("orders", settings) if m.run_id == orders.run_id]
        assert manifest.mode == "query-snapshot" and all(manifest.continuations.values())
        exported[name] = c.exported("orders", orders.run_id, settings)
        assert len(exported[name]) == orders.documents
        print(f"{name}: {orders.documents} docs in {time.monotonic() - started:.1f}s")

    expected = [d for d in docs if where is None or (d["status"] == "shipped" and d["total"] > 50)]
    assert 0 < len(expected) <= DOCS
    by_id = {name: {d["id"]: user_fields(d) for d in got} for name, got in exported.items()}
    for name, got in exported.items():
        assert len(got) == len(by_id[name]) == len(expected), name  # no duplicates across feed ranges
    assert by_id["gateway"] == by_id["cosmosdb-server"] == {d["id"]: d for d in expected}
    out = capsys.readouterr()
    assert_no_secret(out.out + out.err, c)
