from datetime import datetime, timezone

import pytest

from cosmos_export import layout
from cosmos_export.schema import SchemaTracker, next_schema

T = layout.ExportTarget("bkt", "/exports/", "acct", "db", "orders")
START = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def test_keys():
    assert T.container_prefix == "exports/acct/db/orders"
    run = layout.new_run_id(START)
    assert run.startswith("20250304T050607Z-") and layout.RUN_ID_PATTERN.match(run)
    assert layout.part_key(T, run_id=run, started_at=START, feed_range_index=3, part_number=12, compression="zstd") == (
        f"exports/acct/db/orders/data/dt=2025-03-04/run={run}/range=0003/part-00012.jsonl.zst"
    )
    assert layout.manifest_key(T, 7) == "exports/acct/db/orders/manifests/0000000007.json"
    assert layout.checkpoint_key(T) == "exports/acct/db/orders/checkpoint.json"
    assert (
        layout.run_id_of_key(
            layout.part_key(T, run_id=run, started_at=START, feed_range_index=0, part_number=1, compression="gzip")
        )
        == run
    )
    assert layout.run_started_at(run) == START


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match=r"container='a/b' cannot be used in an S3 key"):
        layout.ExportTarget("bkt", "p", "acct", "db", "a/b")
    with pytest.raises(ValueError, match=r"run_id='x' is not a run id"):
        layout.part_key(T, run_id="x", started_at=START, feed_range_index=0, part_number=1, compression="gzip")
    with pytest.raises(ValueError, match=r"compression='lz4' is not supported: use one of gzip, zstd"):
        layout.part_key(
            T, run_id=layout.new_run_id(START), started_at=START, feed_range_index=0, part_number=1, compression="lz4"
        )
    with pytest.raises(ValueError, match="has no time zone"):
        layout.new_run_id(datetime(2025, 1, 1))


def tracker(*docs):
    t = SchemaTracker()
    for d in docs:
        t.observe(d)
    return t


def test_schema_fields_and_fingerprint():
    t = tracker({"id": "1", "n": 1, "x": 1.5, "a": [1, {"b": None}], "o": {"p": True}})
    assert t.fields() == {
        "a": ["array"],
        "a[]": ["integer", "object"],
        "a[].b": ["null"],
        "id": ["string"],
        "n": ["integer"],
        "o": ["object"],
        "o.p": ["boolean"],
        "x": ["number"],
    }
    assert tracker({"id": "2", "n": 5}).fingerprint() == tracker({"n": 9, "id": "z"}).fingerprint()


def test_schema_version_bumps_only_on_new_path_or_type():
    v1 = next_schema(None, tracker({"id": "1", "n": 1}))
    assert v1.version == 1
    assert next_schema(v1, tracker({"id": "2", "n": 7})) is v1  # same paths and types
    assert next_schema(v1, tracker({"id": "3"})) is v1  # a missing field is no change
    v2 = next_schema(v1, tracker({"id": "4", "n": "seven"}))  # new type at a known path
    assert v2.version == 2 and v2.fields["n"] == ["integer", "string"] and v2.fingerprint != v1.fingerprint
    v3 = next_schema(v2, tracker({"id": "5", "extra": {"deep": 1}}))  # new path
    assert v3.version == 3 and "extra.deep" in v3.fields and v3.fields["n"] == ["integer", "string"]
    assert next_schema(v3, tracker({"id": "6", "n": 1})) is v3


def test_merge_is_union():
    a, b = tracker({"x": 1}), tracker({"y": "s"})
    a.merge(b)
    assert a.fields() == {"x": ["integer"], "y": ["string"]}
