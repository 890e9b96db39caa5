"""TTL in the gateway double: default and per-item TTL, expiry on the account's controllable clock, and the
AllVersionsAndDeletes delete that says `timeToLiveExpired` (how a reader tells an expiry from a delete)."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request

import pytest
from azure.cosmos import exceptions

from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
from sandbox.doubles.cosmos.testing import sdk_client

KEY = base64.b64encode(b"no auth configured on this account").decode()


@pytest.fixture()
def ttl_account(local_ca):
    state = CosmosGatewayState("acct", record_all_versions=True)
    state.create_container("db", "ttl", feed_ranges=1).properties["defaultTtl"] = 60
    state.create_container("db", "plain", feed_ranges=1)  # no defaultTtl: TTL off, item ttl ignored
    with serve_cosmos(state, local_ca) as served:
        yield state, served, sdk_client(served.url, KEY, local_ca).get_database_client("db"), local_ca


def _all_versions(served, ca, since: int) -> list[dict]:
    """The AllVersionsAndDeletes feed of db/ttl's only range after LSN `since`, as the wire carries it."""
    request = urllib.request.Request(
        f"{served.url}/dbs/db/colls/ttl/docs",
        headers={
            "A-IM": "Full-Fidelity Feed",
            "If-None-Match": f'"{since}"',
            "x-ms-documentdb-partitionkeyrangeid": "0",
            "x-ms-max-item-count": "1000",
        },
    )
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(ca.bundle_file))) as response:
        return json.loads(response.read())["Documents"]


def test_default_and_item_ttl_expire_on_the_clock_and_the_feed_says_so(ttl_account):
    state, served, db, ca = ttl_account
    container = db.get_container_client("ttl")
    container.upsert_item({"id": "default", "pk": "a"})  # expires after the container's 60 s
    container.upsert_item({"id": "never", "pk": "b", "ttl": -1})
    container.upsert_item({"id": "short", "pk": "c", "ttl": 10})
    container.upsert_item({"id": "long", "pk": "d", "ttl": 120})
    db.get_container_client("plain").upsert_item({"id": "ignored", "pk": "e", "ttl": 5})
    with pytest.raises(exceptions.CosmosHttpResponseError) as bad:
        container.upsert_item({"id": "zero", "pk": "f", "ttl": 0})
    assert bad.value.status_code == 400 and "ttl 0" in bad.value.message

    assert state.advance_clock(11) == {"db/ttl": ["short"]}
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        container.read_item("short", "c")
    # Through the control API, as another process (the sandbox CLI) drives it.
    request = urllib.request.Request(
        f"{served.url}/_double/clock", data=json.dumps({"advance_seconds": 50}).encode(), method="POST"
    )
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(ca.bundle_file))) as response:
        assert json.loads(response.read())["expired"] == {"db/ttl": ["default"]}
    state.advance_clock(60)  # 121 s after the writes: "long" (120 s) is gone, "never" stays
    container.delete_item("never", "b")  # an explicit delete: no timeToLiveExpired
    assert sorted(d["id"] for d in container.read_all_items()) == []
    assert [d["id"] for d in db.get_container_client("plain").read_all_items()] == ["ignored"]

    deletes = {
        c["metadata"]["id"]: c["metadata"].get("timeToLiveExpired", False)
        for c in _all_versions(served, ca, 0)
        if c["metadata"]["operationType"] == "delete"
    }
    assert deletes == {"short": True, "default": True, "long": True, "never": False}


def test_a_rewrite_restarts_the_ttl(ttl_account):
    state, _, db, _ = ttl_account
    container = db.get_container_client("ttl")
    container.upsert_item({"id": "x", "pk": "a"})
    state.advance_clock(40)
    container.upsert_item({"id": "x", "pk": "a", "v": 2})  # _ts moves: 60 s from now
    assert state.advance_clock(40) == {}
    assert container.read_item("x", "a")["v"] == 2
    assert state.advance_clock(21) == {"db/ttl": ["x"]}
    with pytest.raises(ValueError, match="only moves forward"):
        state.advance_clock(-1)


def test_expiry_after_a_scan_sees_later_writes_and_a_changed_default_ttl(ttl_account):
    """The double remembers the earliest expiry instead of scanning every document per request: a write with a
    shorter ttl after a scan, and a defaultTtl changed in place, must still expire on time."""
    state, _, db, _ = ttl_account
    container = db.get_container_client("ttl")
    container.upsert_item({"id": "long", "pk": "a", "ttl": 100})
    assert state.advance_clock(1) == {}  # scanned: nothing due before 100 s
    container.upsert_item({"id": "short", "pk": "b", "ttl": 5})
    assert [d["id"] for d in container.query_items("SELECT * FROM c", enable_cross_partition_query=True)] == [
        "long",
        "short",
    ]
    assert state.advance_clock(6) == {"db/ttl": ["short"]}
    state.container("db", "ttl").properties["defaultTtl"] = 2  # "plain" documents of db/ttl now live 2 s
    container.upsert_item({"id": "default", "pk": "c"})
    state.container("db", "ttl").properties["defaultTtl"] = -1  # on, no default: only items' own ttl
    assert state.advance_clock(3) == {}
    state.container("db", "ttl").properties["defaultTtl"] = 2
    assert state.advance_clock(0.5) == {"db/ttl": ["default"]}
    assert state.advance_clock(100) == {"db/ttl": ["long"]}
