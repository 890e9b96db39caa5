"""SchemaTracker.observe_page (the sink's column-wise fast path) must equal observe() per document:
the same (path, type) pairs and the same per-document "orjson writes it canonically" result."""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosmos_export.schema import SchemaTracker
from sandbox.seed import sample_documents

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-5, 1e-4, 1e308]),
    st.text(max_size=3),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("abcd"), inner, max_size=4),
    max_leaves=12,
)
_docs = st.lists(st.dictionaries(st.sampled_from(["id", "a", "b", "c", "x.y"]), _values, max_size=5), max_size=12)


def per_document(docs: list[dict]) -> tuple[frozenset, list[bool]]:
    tracker = SchemaTracker()
    flags = [tracker.observe(doc) for doc in docs]
    return tracker.pairs(), flags


def per_page(docs: list[dict]) -> tuple[frozenset, list[bool]]:
    tracker = SchemaTracker()
    flags = tracker.observe_page(docs)
    return tracker.pairs(), flags


# `make mutation` runs this once per mutant: it asks for fewer examples (mutation/run.py), the suite for 200.
@settings(max_examples=int(os.environ.get("TESTS_HYPOTHESIS_EXAMPLES", "200")), deadline=None)
@given(_docs)
def test_page_equals_per_document(docs: list[dict]) -> None:
    assert per_page(docs) == per_document(docs)


def test_sample_orders_page() -> None:
    docs = [json.loads(json.dumps(d)) for d in sample_documents(3000)]
    pairs, flags = per_page(docs)
    assert (pairs, flags) == per_document(docs)
    assert ("items[].attributes.weightGrams", "integer") in pairs
    assert ("giftMessage", "null") in pairs and ("giftMessage", "string") in pairs


@pytest.mark.parametrize(
    "value, fast",
    [
        (0.5, True),
        (0.0, True),
        (-0.0, True),
        (1e-5, False),
        (-1e-5, False),
        (math.nan, False),
        (math.inf, False),
        (-math.inf, False),
        (1e308, True),
    ],
)
def test_float_flags_point_at_the_right_document(value: float, fast: bool) -> None:
    docs = [
        {"id": "0", "m": {"v": [1.5, {"w": 2.5}]}},
        {"id": "1", "m": {"v": [1.5, {"w": value}]}},
        {"id": "2", "m": {"v": [1e308, 1e308]}},
    ]
    assert per_page(docs)[1] == [True, fast, True] == per_document(docs)[1]


def test_map_like_objects_take_the_per_object_walk() -> None:
    docs: list[dict] = [{"id": str(i), "scores": {f"user{i}-{k}": k * 0.5 for k in range(20)}} for i in range(50)]
    docs[7]["scores"]["tiny"] = 1e-9
    pairs, flags = per_page(docs)
    assert (pairs, flags) == per_document(docs)
    assert flags.count(False) == 1 and not flags[7]


def test_non_json_value_is_refused_with_its_type() -> None:
    with pytest.raises(TypeError, match="document value of type set is not JSON"):
        SchemaTracker().observe_page([{"id": "1"}, {"id": "2", "bad": {1, 2}}])


def test_sink_part_schemas_hold_exactly_their_own_documents(moto_server) -> None:
    """Pages that straddle part boundaries: each part's schema-version tag is computed from its own documents."""
    import random
    import uuid
    from datetime import datetime, timezone

    import boto3

    from cosmos_export import jsonl, layout
    from cosmos_export.contract import Meta
    from cosmos_export.schema import SchemaInfo, next_schema
    from cosmos_export.sink import FeedRangeSink
    from cosmos_export.storage import client_config as s3_client_config

    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=s3_client_config(),
    )
    bucket = f"export-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    target = layout.ExportTarget(bucket, "exports", "acct", "db", "orders")
    rng = random.Random(3)
    written = [{"id": f"d{i}", "text": "".join(rng.choices("abcdefgh", k=2000)), "n": i} for i in range(600)]
    for doc in written[450:]:
        doc["late"] = {"flag": True, "tiny": 1e-7}  # a new path only in the last parts, and a non-orjson float
    previous_tracker = SchemaTracker()
    previous_tracker.observe(written[0])
    previous = next_schema(None, previous_tracker)
    run_schema = SchemaTracker()
    start = datetime(2025, 3, 4, tzinfo=timezone.utc)
    sink = FeedRangeSink(
        s3,
        target,
        run_id=layout.new_run_id(start),
        started_at=start,
        feed_range="{}",
        feed_range_index=0,
        compression="zstd",
        part_size_bytes=1,
        kms_key_arn=None,
        schema=run_schema,
        log=None,
        previous_schema=previous,
    )
    for i in range(0, len(written), 70):  # 70 docs * 2 KB: two 256 KiB batches per part, pages straddle parts
        sink.write_page(written[i : i + 70])
    records = sink.close()
    assert len(records) > 3
    read_back, versions = [], set()
    for record in records:
        assert record.version_id is not None  # the bucket is versioned
        body = s3.get_object(Bucket=bucket, Key=record.key, VersionId=record.version_id)["Body"].read()
        lines = jsonl.decompress(body, "zstd")
        assert lines == jsonl.encode_lines_stdlib(json.loads(line) for line in lines.splitlines())
        part_docs = [json.loads(line) for line in lines.splitlines()]
        tracker = SchemaTracker()
        for doc in part_docs:
            tracker.observe(doc)
        expected = next_schema(previous, tracker).version
        tags = {
            t["Key"]: t["Value"]
            for t in s3.get_object_tagging(Bucket=bucket, Key=record.key, VersionId=record.version_id)["TagSet"]
        }
        assert record.schema_version == expected == int(tags[Meta.SCHEMA_VERSION])
        assert record.documents == len(part_docs)
        versions.add(expected)
        read_back += part_docs
    assert read_back == written and versions == {1, 2}
    assert run_schema.pairs() == per_document(written)[0]
    assert isinstance(previous, SchemaInfo)


@pytest.mark.parametrize(
    "docs",
    [
        [{"a": 1, "b": 2.5}, {"a": 1e-5, "c": "x"}],  # same key count, different keys
        [{"b": 1, "a": 2.5}, {"a": 1e-5, "b": [0.0, 3]}],  # same keys, another order
        [{"a": {"k": 0.0}}, {"a": {"k": -0.0}}, {"a": {"k": 1e-300}}],  # single-key objects, zeros, a tiny float
    ],
)
def test_same_sized_objects_with_other_keys_or_order(docs: list[dict]) -> None:
    assert per_page(docs) == per_document(docs)
