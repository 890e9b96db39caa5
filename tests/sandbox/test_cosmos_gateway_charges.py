"""The gateway double's request charges for reads (what the RU budget is tested against) and its latency knob."""

from __future__ import annotations

import json
import time

import pytest

from sandbox.doubles.cosmos.control import handle_control
from sandbox.doubles.cosmos.gateway import QUERY_PAGE_RU, READ_RU_PER_KB
from tests.sandbox.test_cosmos_gateway import container, drain, gateway, issuer  # noqa: F401  (fixtures)

DB, COLL = "shop", "orders"


def sized_docs(n: int, size: int) -> list[dict]:
    return [{"id": f"d-{i}", "pk": f"k-{i % 7}", "pad": "x" * size} for i in range(n)]


def charges(container, pages) -> list[tuple[int, float]]:
    """(documents bytes, x-ms-request-charge) of every page the SDK read."""
    out = []
    for page in pages:
        docs = list(page)
        if docs:
            size = len(b",".join(json.dumps(d, separators=(",", ":")).encode() for d in docs))
            out.append((size, float(container.client_connection.last_response_headers["x-ms-request-charge"])))
    return out


def test_change_feed_and_query_pages_cost_one_ru_per_started_kb(gateway, container):
    state, _ = gateway
    state.upsert_many(DB, COLL, sized_docs(60, 900) + sized_docs(60, 9000)[30:])
    [feed_range, *_] = list(container.read_feed_ranges())
    feed = charges(
        container,
        container.query_items_change_feed(feed_range=feed_range, start_time="Beginning", max_item_count=5).by_page(),
    )
    query = charges(
        container, container.query_items("SELECT * FROM c", partition_key="k-1", max_item_count=5).by_page()
    )
    assert feed and query
    for size, charge in feed:
        # The double's bytes may differ from a re-serialization by a few separators: within one KB.
        assert abs(charge - READ_RU_PER_KB * size / 1024) <= 1.5, (size, charge)
    for size, charge in query:
        assert abs(charge - QUERY_PAGE_RU - READ_RU_PER_KB * size / 1024) <= 1.5, (size, charge)
    small, large = min(feed), max(feed)
    assert large[1] > 5 * small[1]  # ~45 KB pages cost ~10x the ~5 KB ones: proportional to the bytes


def test_latency_holds_every_response_and_is_set_by_the_control_endpoint(gateway, container):
    state, _ = gateway
    state.upsert_many(DB, COLL, sized_docs(3, 10))
    assert handle_control(state, "POST", ["latency"], {}, b'{"ms": 120}') == (200, {"latency_ms": 120.0})
    began = time.perf_counter()
    container.read_item("d-1", partition_key="k-1")
    assert time.perf_counter() - began >= 0.120
    assert handle_control(state, "POST", ["latency"], {}, b'{"ms": -1}')[0] == 400
    handle_control(state, "POST", ["latency"], {}, b'{"ms": 0}')
    began = time.perf_counter()
    container.read_item("d-1", partition_key="k-1")
    assert time.perf_counter() - began < 0.120


@pytest.mark.parametrize("ms", ["fast", "20001"])
def test_latency_refuses_bad_values(gateway, ms):
    state, _ = gateway
    status, body = handle_control(state, "POST", ["latency"], {}, json.dumps({"ms": ms}).encode())
    assert status == 400 and ms in body["error"]
