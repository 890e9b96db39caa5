"""The double's /_double/ control endpoints (bulk NDJSON seed, writes, faults, stats, split)."""

from __future__ import annotations

import functools
import json
import time

import requests

from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
from sandbox.doubles.cosmos.testing import sdk_client

PAD = "x" * 900  # ~1 KB documents, as in the benchmark


def test_control_endpoints_drive_a_separate_client(local_ca):
    state = CosmosGatewayState("acct")
    with serve_cosmos(state, local_ca) as served, requests.Session() as http:
        # Per request: a REQUESTS_CA_BUNDLE in the environment would override Session.verify.
        http.request = functools.partial(http.request, verify=str(local_ca.bundle_file))
        base = f"{served.url}/_double"
        assert http.post(f"{base}/containers", json={"db": "db", "container": "c", "feed_ranges": 3}).status_code == 201
        n = 20_000
        body = "\n".join(json.dumps({"id": f"d{i}", "pk": f"p{i}", "pad": PAD}) for i in range(n)).encode()
        started = time.perf_counter()
        response = http.post(f"{base}/seed", params={"db": "db", "container": "c"}, data=body)
        elapsed = time.perf_counter() - started
        assert response.json() == {"upserted": n}
        print(f"HTTP NDJSON seed: {n / elapsed:,.0f} docs/s")  # shown with -s; the report quotes it
        assert http.post(
            f"{base}/upsert", params={"db": "db", "container": "c"}, json={"id": "extra", "pk": "p"}
        ).json()["_rid"]
        assert http.post(
            f"{base}/delete", json={"db": "db", "container": "c", "id": "d0", "partition_key": "p0"}
        ).json() == {"deleted": True}
        assert (
            http.post(
                f"{base}/delete", json={"db": "db", "container": "c", "id": "d0", "partition_key": "p0"}
            ).status_code
            == 404
        )
        assert len(http.post(f"{base}/split", json={"db": "db", "container": "c"}).json()["new_ranges"]) == 2
        assert http.post(
            f"{base}/faults", json={"kind": "throttle", "n": 2, "operation": "container.read", "retry_after_ms": 5}
        ).json() == {"ok": True}
        bad = http.post(f"{base}/faults", json={"kind": "explode", "n": 1})
        assert bad.status_code == 400 and "'explode'" in bad.json()["error"]

        container = sdk_client(served.url, "a2V5", local_ca).get_database_client("db").get_container_client("c")
        assert container.read()["id"] == "c"  # after two 429s
        assert len(list(container.read_feed_ranges())) == 4
        total = sum(
            1
            for fr in container.read_feed_ranges()
            for _ in container.query_items_change_feed(feed_range=fr, start_time="Beginning", max_item_count=1000)
        )
        assert total == n  # n seeded + "extra" - "d0"
        stats = http.get(f"{base}/stats").json()
    assert stats["container.read"] == {"200": 1, "429": 2}
    assert stats["changefeed.read"]["200"] >= 4


def test_in_process_bulk_load_rate_and_contents():
    state = CosmosGatewayState("acct")
    state.create_container("db", "c")
    n = 50_000
    started = time.perf_counter()
    assert state.upsert_many("db", "c", ({"id": f"d{i}", "pk": f"p{i % 1000}", "pad": PAD} for i in range(n))) == n
    elapsed = time.perf_counter() - started
    print(f"in-process upsert_many: {n / elapsed:,.0f} docs/s")
    container = state.container("db", "c")
    assert container.document_count() == n
    # Stored once as bytes: each ~1 KB body plus its system properties, nothing else per document.
    sample = next(container.iter_documents())
    assert set(sample) == {"id", "pk", "pad", "_rid", "_self", "_etag", "_attachments", "_ts"}
