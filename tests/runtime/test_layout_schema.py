from datetime import datetime, timezone

import pytest

from cosmos_export import layout
from cosmos_export.schema import (
    SchemaInfo,
    SchemaTracker,
    _type_name,
    analytic_columns,
    document_fields,
    fingerprint,
    next_schema,
    pairs_to_fields,
)

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


def test_self_merge_returns_and_changes_nothing():
    # merge with itself must return (the lock is not reentrant) and keep the pairs.
    a = tracker({"x": 1})
    a.merge(a)
    assert a.fields() == {"x": ["integer"]}


def test_type_name_maps_each_json_type_and_refuses_others():
    # _type_name 1, 2: the helper's own contract (the walks call it only for non-JSON values today).
    values = ["s", 1, 1.5, True, None, {}, []]
    assert [_type_name(v) for v in values] == ["string", "integer", "number", "boolean", "null", "object", "array"]
    with pytest.raises(TypeError, match=r"^document value of type bytes is not JSON: b'\\x00'$"):
        _type_name(b"\x00")


@pytest.mark.parametrize("doc", [{"id": "1", "o": {"bad": {1}}}, {"id": "1", "l": [1, {1}]}, {"l": [[{1}]]}])
def test_a_non_json_value_in_a_document_is_refused_naming_its_type(doc):
    with pytest.raises(TypeError, match=r"^document value of type set is not JSON: \{1\}$"):
        SchemaTracker().observe(doc)


def test_observe_flags_floats_orjson_would_not_write_canonically():
    # True when every float, however deep, is in orjson's byte-identical range.
    assert SchemaTracker().observe({"a": 1.5, "b": [0.0, {"c": 2.5}], "d": {"e": [1e308]}})
    for doc in ({"a": 1e-7}, {"o": {"p": {"q": 1e-7}, "r": 1}}, {"l": [[1e-7], 2]}, {"l": [{"p": 1e-7}, 2]}):
        assert not SchemaTracker().observe(doc), doc
    # A slow float early does not get reset by fast values after it (in the same object or list).
    assert not SchemaTracker().observe({"o": {"p": 1e-7}, "n": {"q": 1.5}, "l": [[1e-7], [1.5]]})
    assert not SchemaTracker().observe({"l": [{"p": 1e-7}, {"q": 1.5}]})


def test_paths_of_nested_objects_and_arrays():
    t = tracker({"o": {"l": [[{"k": 1}]], "m": {"n": "x"}}, "l": [{"a": [True]}, [None]]})
    assert t.fields() == {
        "l": ["array"],
        "l[]": ["array", "object"],
        "l[].a": ["array"],
        "l[].a[]": ["boolean"],
        "l[][]": ["null"],
        "o": ["object"],
        "o.l": ["array"],
        "o.l[]": ["array"],
        "o.l[][]": ["object"],
        "o.l[][].k": ["integer"],
        "o.m": ["object"],
        "o.m.n": ["string"],
    }


def test_next_schema_takes_fields_or_a_tracker_and_stores_the_union():
    fields = {"n": ["integer"], "id": ["string"]}
    v1 = next_schema(None, fields)
    assert v1 == next_schema(None, tracker({"id": "1", "n": 1}))
    assert v1.version == 1 and v1.fields == {"id": ["string"], "n": ["integer"]}
    assert v1.fingerprint == fingerprint(v1.fields)
    assert v1.to_dict() == {"version": 1, "fingerprint": v1.fingerprint, "fields": v1.fields}
    assert next_schema(v1, {"n": ["integer"]}) is v1
    v2 = next_schema(v1, {"n": ["number"], "z": ["null"]})
    assert v2 == SchemaInfo(
        version=2,
        fingerprint=fingerprint({"id": ["string"], "n": ["integer", "number"], "z": ["null"]}),
        fields={"id": ["string"], "n": ["integer", "number"], "z": ["null"]},
    )
    # A previous schema whose types are stored unsorted is still "no change" for the same types.
    unsorted = SchemaInfo(
        version=4, fingerprint=fingerprint({"n": ["integer", "number"]}), fields={"n": ["number", "integer"]}
    )
    assert next_schema(unsorted, {"n": ["integer"]}) is unsorted


def test_pairs_to_fields_groups_and_sorts():
    pairs = {("b", "string"), ("a", "string"), ("a", "integer"), ("a.c", "null")}
    assert list(pairs_to_fields(pairs).items()) == [("a", ["integer", "string"]), ("a.c", ["null"]), ("b", ["string"])]


# An AllVersionsAndDeletes schema: the change records' envelope plus a snapshot's top-level fields.
_CHANGE_FIELDS = {
    "current": ["object"],
    "current.id": ["string"],
    "current.n": ["integer"],
    "current.addr": ["object"],
    "current.addr.city": ["string"],
    "current.status": ["string"],  # only in change records
    "metadata": ["object"],
    "metadata.lsn": ["integer"],
    "metadata.operationType": ["string"],
    "previous": ["object"],
    "previous.id": ["string"],
    "id": ["string"],
    "n": ["number"],
    "currently": ["boolean"],
}


def test_document_fields_of_change_records_are_the_documents_own():
    assert document_fields(_CHANGE_FIELDS, change_records=False) is _CHANGE_FIELDS
    assert document_fields(_CHANGE_FIELDS, change_records=True) == {
        "id": ["string"],
        "n": ["integer", "number"],  # the snapshot's number and the change records' integer
        "currently": ["boolean"],  # starts with "current" but is not under it
        "addr": ["object"],
        "addr.city": ["string"],
        "status": ["string"],
    }


def test_analytic_columns_promote_only_stable_scalar_top_level_fields():
    fields = {
        "e": ["object"],  # skipped first: the fields after it still count
        "e.x": ["string"],
        "f[]": ["integer"],
        "g": ["null"],
        "a": ["string"],
        "b": ["integer", "null"],
        "c": ["integer", "number"],
        "d": ["integer", "string"],
        "h": ["boolean"],
        "i": ["number"],
        "metadata": ["string"],  # a document's own field: only change records have an envelope
    }
    assert analytic_columns(fields) == {
        "a": {"duckdb": "VARCHAR", "glue": "string"},
        "b": {"duckdb": "BIGINT", "glue": "bigint"},
        "c": {"duckdb": "DOUBLE", "glue": "double"},
        "h": {"duckdb": "BOOLEAN", "glue": "boolean"},
        "i": {"duckdb": "DOUBLE", "glue": "double"},
        "metadata": {"duckdb": "VARCHAR", "glue": "string"},
    }
    assert analytic_columns(_CHANGE_FIELDS, change_records=True) == {
        "id": {"duckdb": "VARCHAR", "glue": "string"},
        "n": {"duckdb": "DOUBLE", "glue": "double"},
        "currently": {"duckdb": "BOOLEAN", "glue": "boolean"},
        "status": {"duckdb": "VARCHAR", "glue": "string"},
    }
