"""Snapshot -> changes -> incremental through the whole chain of trust, asserted on the bytes in S3.

The worker authenticates exactly as in ECS: task role credentials (moto
AssumeRole) -> STS GetWebIdentityToken double -> Entra double (federated
credential from the stack) -> Cosmos gateway double (RBAC from the stack's role
assignments) -> S3 (moto) with the task role's own credentials.
"""

from __future__ import annotations

import hashlib
import re

from cosmos_export import audit, contract
from cosmos_export.contract import Meta
from cosmos_export.export import run_export
from cosmos_export.layout import checkpoint_key, manifest_key
from cosmos_export.verify import verify_run
from sandbox.seed import sample_documents

from .conftest import user_fields

ORDERS, CUSTOMERS = 600, 40
UPDATED, INSERTED, DELETED = 40, 25, 10


def customers(n: int) -> list[dict]:
    return [
        {
            "id": f"cust-{i:05d}",
            "customerId": f"cust-{i:05d}",
            "type": "customer",
            "name": f"Customer {i}",
            "email": f"c{i}@example.com",
            "vip": i % 7 == 0,
        }
        for i in range(n)
    ]


def assert_no_secret(text: str, chain) -> None:
    assert "eyJ" not in text  # every JWT (STS token, assertion, access token) starts with eyJ
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert chain.running.credentials[name] not in text


def check_committed_run(chain, container: str, run_id: str, *, sequence: int, mode: str, documents: int):
    """Manifest, parts (bytes, sha256, counts, metadata, tags, SSE-KMS) and checkpoint of one committed run."""
    settings = chain.settings()
    target = chain.target(container)
    manifests = chain.manifests(container)
    manifest = manifests[sequence - 1]
    assert (manifest.sequence, manifest.run_id, manifest.mode) == (sequence, run_id, mode)
    assert (manifest.account, manifest.database, manifest.container) == (
        chain.plan.cosmos_account,
        chain.plan.cosmos_database,
        container,
    )
    # One continuation per feed range of the gateway (serve.FEED_RANGES), none missing.
    assert len(manifest.continuations) == 4 and all(manifest.continuations.values())
    assert sum(p.documents for p in manifest.parts) == manifest.documents == documents
    docs = []
    for part in manifest.parts:
        assert part.key.startswith(f"{target.container_prefix}/data/dt=") and f"/run={run_id}/" in part.key
        assert part.feed_range in manifest.continuations
        body, raw, part_docs = chain.part_documents(part.key, settings.compression)
        assert (len(body), len(raw), len(part_docs)) == (part.bytes, part.uncompressed_bytes, part.documents)
        assert hashlib.sha256(body).hexdigest() == part.sha256
        head = chain.s3.head_object(Bucket=target.bucket, Key=part.key)
        assert head["VersionId"] == part.version_id
        assert head["Metadata"] == {
            Meta.RUN_ID: run_id,
            Meta.ACCOUNT: chain.plan.cosmos_account,
            Meta.DATABASE: chain.plan.cosmos_database,
            Meta.CONTAINER: container,
            Meta.FEED_RANGE: part.feed_range,
            Meta.FORMAT_VERSION: str(contract.MANIFEST_FORMAT_VERSION),
        } | {
            k: v
            for k, v in head["Metadata"].items()
            if k not in (Meta.RUN_ID, Meta.ACCOUNT, Meta.DATABASE, Meta.CONTAINER, Meta.FEED_RANGE, Meta.FORMAT_VERSION)
        }
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == chain.plan.kms_key_arn
        tags = {
            t["Key"]: t["Value"]
            for t in chain.s3.get_object_tagging(Bucket=target.bucket, Key=part.key, VersionId=part.version_id)[
                "TagSet"
            ]
        }
        assert tags == {
            Meta.DOCUMENT_COUNT: str(part.documents),
            Meta.SHA256: part.sha256,
            Meta.SCHEMA_VERSION: str(part.schema_version),
        }
        docs.extend(part_docs)
    assert chain.s3.head_object(Bucket=target.bucket, Key=manifest_key(target, sequence))
    report = verify_run(chain.s3, target, run_id)
    assert report.ok and (report.documents, report.parts_checked) == (documents, len(manifest.parts))
    return manifest, docs


def test_snapshot_changes_incremental_bytes_manifests_checkpoints(chain, capsys):
    c = chain()
    audit.configure_logging("INFO")
    orders = {d["id"]: d for d in sample_documents(ORDERS)}
    c.gateway.upsert_many(c.plan.cosmos_database, "orders", list(orders.values()))
    c.gateway.upsert_many(c.plan.cosmos_database, "customers", customers(CUSTOMERS))
    assert c.plan.cosmos_containers == ("orders", "customers")

    first = run_export(c.settings(), "snapshot")
    snap = {r.container: r for r in first.containers}
    assert [(r.container, r.mode, r.sequence, r.documents, r.feed_ranges) for r in first.containers] == [
        ("orders", "snapshot", 1, ORDERS, 4),
        ("customers", "snapshot", 1, CUSTOMERS, 4),
    ]
    m1, docs = check_committed_run(c, "orders", snap["orders"].run_id, sequence=1, mode="snapshot", documents=ORDERS)
    # Every document exactly once, with identical content.
    assert len(docs) == len({d["id"] for d in docs}) == ORDERS
    assert {d["id"]: user_fields(d) for d in docs} == orders
    _, cdocs = check_committed_run(
        c, "customers", snap["customers"].run_id, sequence=1, mode="snapshot", documents=CUSTOMERS
    )
    assert sorted((user_fields(d) for d in cdocs), key=lambda d: d["id"]) == customers(CUSTOMERS)
    cp = c.checkpoint("orders")
    assert (cp.sequence, cp.run_id, cp.mode) == (1, snap["orders"].run_id, "snapshot")
    assert cp.manifest_key == manifest_key(c.target("orders"), 1)
    assert cp.continuations == m1.continuations
    assert cp.schema_.fingerprint == m1.schema_.fingerprint

    # Changes: update, insert, delete (LatestVersion: a delete is not in the delta, the document just stops).
    ids = sorted(orders)
    updated = [
        {**orders[i], "revision": 1, "status": "returned", "total": orders[i]["total"] + 1} for i in ids[:UPDATED]
    ]
    inserted = list(sample_documents(INSERTED, start=ORDERS))
    deleted = ids[UPDATED : UPDATED + DELETED]
    c.gateway.upsert_many(c.plan.cosmos_database, "orders", updated + inserted)
    for doc_id in deleted:
        assert c.gateway.delete(c.plan.cosmos_database, "orders", doc_id, orders[doc_id]["customerId"])

    second = run_export(c.settings(), "incremental")
    inc = {r.container: r for r in second.containers}
    assert [(r.container, r.mode, r.sequence, r.documents) for r in second.containers] == [
        ("orders", "incremental", 2, UPDATED + INSERTED),
        ("customers", "incremental", 2, 0),
    ]
    m2, delta = check_committed_run(
        c, "orders", inc["orders"].run_id, sequence=2, mode="incremental", documents=UPDATED + INSERTED
    )
    expected = {d["id"]: d for d in updated + inserted}
    assert len(delta) == len(expected)
    assert {d["id"]: user_fields(d) for d in delta} == expected  # exactly the changed ones, new content
    assert not set(deleted) & {d["id"] for d in delta}
    assert set(m2.continuations) == set(m1.continuations)  # the same feed ranges, each continued
    changed_ranges = {p.feed_range for p in m2.parts}
    assert changed_ranges and all(m2.continuations[r] != m1.continuations[r] for r in changed_ranges)
    assert m2.schema_previous.fingerprint == m1.schema_.fingerprint and m2.schema_.version == m1.schema_.version
    cp = c.checkpoint("orders")
    assert (cp.sequence, cp.run_id, cp.continuations) == (2, inc["orders"].run_id, m2.continuations)
    assert c.checkpoint("customers").sequence == 2

    # No changes: an incremental commits an empty manifest (no parts) and keeps every continuation.
    third = run_export(c.settings(), "incremental")
    assert [(r.container, r.sequence, r.documents, r.parts) for r in third.containers] == [
        ("orders", 3, 0, 0),
        ("customers", 3, 0, 0),
    ]
    m3 = c.manifests("orders")[2]
    assert m3.parts == [] and m3.continuations == m2.continuations
    assert verify_run(c.s3, c.target("orders"), m3.run_id).ok
    assert c.checkpoint("orders").sequence == 3

    # The CLI's verify, as an operator runs it, for both runs.
    for run_id in (snap["orders"].run_id, inc["orders"].run_id):
        done = c.cli("verify", "--run", run_id)
        assert done.returncode == 0, done.stderr[-2000:]
        assert re.search(
            rf"^orders: run {run_id} sequence \d+: \d+ part\(s\), \d+ document\(s\), \d+ bytes, ok$", done.stdout, re.M
        ), done.stdout
        assert_no_secret(done.stdout + done.stderr, c)

    out = capsys.readouterr()
    assert '"event": "cosmos_page"' in out.out or "cosmos_page" in out.out
    assert_no_secret(out.out + out.err, c)
    keys = [o["Key"] for o in c.s3.list_objects_v2(Bucket=c.plan.bucket, Prefix=c.prefix + "/")["Contents"]]
    assert checkpoint_key(c.target("orders")) in keys
