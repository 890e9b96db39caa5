"""Raw documents written through (passthrough.py): the same lines, schema and `_ts` as parsing them would give."""

from __future__ import annotations

import json
import math
import random
import struct

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosmos_export import jsonl, metrics, passthrough, sdk_json
from cosmos_export.schema import SchemaTracker, next_schema
from tests.runtime.test_sink import make_sink, read_parts, s3, target  # noqa: F401  # s3, target: fixtures

_items = msgspec.json.Decoder(list[msgspec.Raw]).decode
_canonical = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def raws(*texts: str | bytes) -> list[msgspec.Raw]:
    """Documents as a change-feed page hands them over in raw mode."""
    body = b"[" + b",".join(t.encode() if isinstance(t, str) else t for t in texts) + b"]"
    return _items(body)


def reference(items: list[msgspec.Raw]) -> tuple[list[bytes], frozenset]:
    """What the export wrote before: parse each document, serialize it canonically, walk it for its schema."""
    docs = [sdk_json.loads(bytes(r)) for r in items]
    tracker = SchemaTracker()
    for doc in docs:
        tracker.observe(doc)
    return [jsonl.line_bytes(d, not jsonl.needs_stdlib(d)) for d in docs], tracker.pairs()


class Counted(passthrough.ShapeModel):
    """A model that counts the documents its fast way wrote."""

    fast = 0


def lines(items: list[msgspec.Raw], model: Counted) -> list[bytes]:
    """What the sink writes for each document: the fast way's Raw, or the slow way's line."""
    out = []
    for raw in items:
        line = model.line(raw)
        model.fast += line is not None
        out.append(passthrough.slow_line(raw, model) if line is None else bytes(line))
    return out


def check(items: list[msgspec.Raw]) -> Counted:
    model = Counted()
    assert lines(items, model) == reference(items)[0]
    assert frozenset(model.pairs()) == reference(items)[1]
    assert model.newest_ts == metrics.newest_ts([sdk_json.loads(bytes(r)) for r in items])
    return model


def test_msgspec_writes_every_code_point_as_json_dumps_does():
    # The fast way's premise for strings: one sweep over every scalar value (surrogates cannot be str in UTF-8).
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    encode = msgspec.json.encode
    assert [c for c in chars if encode(c).decode() != _canonical(c)] == []


def test_msgspec_writes_floats_as_json_dumps_does_in_range_and_the_rest_is_caught():
    # The premise for numbers: equal spelling for 0 and 1e-4 <= |x| < 1e16; elsewhere the model refuses the value
    # (a float field refuses |x| >= 1e16) or the bytes check finds msgspec's spelling of a small one.
    rng = random.Random(5)
    values = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(200_000)]
    values += [10 ** rng.uniform(-330, 20) * rng.choice((1, -1)) for _ in range(200_000)]
    values += [round(rng.uniform(0, 1000), 2) for _ in range(100_000)]
    values += [0.0, -0.0, 1e-4, -1e-4, 1e16, -1e16, 9999999999999998.0, 5e-324, 1e-5, 1e-7, 1.5e-10, 0.1]
    small, caught, mismatched = 0, 0, []
    for x in values:
        if not math.isfinite(x):
            continue
        mine, theirs = msgspec.json.encode(x), _canonical(x).encode()
        if x == 0 or 1e-4 <= abs(x) < 1e16:
            if mine != theirs:
                mismatched.append(x)
        elif abs(x) < 1e-4 and mine != theirs:
            small += 1
            caught += passthrough._TINY_PLAIN in mine or passthrough._TINY_EXP.search(mine) is not None
    assert mismatched == []
    assert small > 3_000 and caught == small


def test_documents_of_one_shape_go_the_fast_way_and_their_lines_are_the_canonical_ones():
    texts = [
        _canonical(
            {
                "id": f"o{i}",
                "n": i,
                "price": 1.5 + i,
                "note": None if i % 2 else 'héllo 😀 "quoted" \\ \n',
                "tags": ["a", "b"][: i % 3],
                "address": {"city": "Zürich", "zip": "8000"},
                "_etag": f'"{i:08x}-0000"',
                "_ts": 1700000000 + i,
            }
        )
        for i in range(200)
    ]
    model = check(raws(*texts))
    # Learning takes the first documents (and the first with a note, with two tags); the rest are written through.
    assert model.fast >= 190
    assert model.newest_ts == 1700000199


@pytest.mark.parametrize(
    ("first", "second", "fast", "why"),
    [
        # fast: how many of the four documents (first, first, second, second) went the fast way. Each first
        # copy is learnt the slow way; a repeat goes the fast way only when its bytes are canonical and the
        # model now has its shape (2), never when its bytes are not what json.dumps writes (1).
        ('{"id":"a","x":1.5}', '{"id":"b","x":2}', 2, "an integer where only numbers were seen"),
        ('{"id":"a","x":2}', '{"id":"b","x":2.5}', 2, "a number where only integers were seen"),
        ('{"id":"a","x":"s"}', '{"id":"b","x":null}', 2, "null where only strings were seen"),
        ('{"id":"a","x":[]}', '{"id":"b","x":[1]}', 2, "elements in an array seen empty"),
        ('{"id":"a","x":{"y":1}}', '{"id":"b","x":{"y":1,"z":true}}', 2, "a new nested key"),
        ('{"id":"a","x":[{"y":1}]}', '{"id":"b","x":[{"y":"1"}]}', 2, "a new type in an array's objects"),
        ('{"id":"a","x":1}', '{"id":"b","x":123456789012345678901234567890}', 3, "a 96-bit integer (a known type)"),
        ('{"id":"a","x":1}', '{"x":1,"id":"b"}', 1, "keys in another order than the model's"),
        ('{"id":"a","x":1.5}', '{"id":"b","x":1.50}', 1, "a number not in its shortest form"),
        ('{"id":"a","x":1.5}', '{"id":"b","x":1e-05}', 1, "a small float in json.dumps's spelling"),
        ('{"id":"a","x":1.5}', '{"id":"b","x":0.00001}', 1, "a small float in msgspec's spelling"),
        ('{"id":"a","x":1.5}', '{"id":"b","x":1e-7}', 1, "a small float in msgspec's exponent spelling"),
        ('{"id":"a","x":1.5}', '{"id":"b","x":1e+16}', 1, "a large float"),
        ('{"id":"a","x":1}', '{"id":"b","x":-0}', 1, "an integer minus zero"),
        ('{"id":"a","x":"s"}', '{"id":"b","x":"\\u00e9\\/"}', 1, "escapes json.dumps would not write"),
        ('{"id":"a","x":1}', '{"id": "b", "x": 1}', 1, "whitespace"),
        ('{"id":"a","x":1}', '{"id":"b","x":1,"x":2}', 1, "a duplicate key"),
    ],
)
def test_a_document_the_model_does_not_have_goes_the_slow_way_and_is_learnt(first, second, fast, why):
    model = check(raws(first, first, second, second))
    assert model.fast == fast, why


def test_a_key_new_in_the_middle_is_placed_where_the_document_has_it():
    model = check(raws('{"a":1,"c":3}', '{"a":1,"b":2,"c":3}', '{"a":1,"c":3}', '{"a":1,"b":2,"c":3}'))
    assert model.fast == 2  # both shapes fit the merged order a, b, c


@pytest.mark.parametrize(("limit", "value"), [("MAX_NODES", 50), ("MAX_CHANGES", 20)])
def test_irregular_documents_turn_the_fast_way_off(monkeypatch, limit, value):
    # An object used as a map: every document a new key, a new path, a rebuilt decoder.
    monkeypatch.setattr(passthrough, limit, value)
    texts = [json.dumps({"id": str(i), "map": {f"k{i}": i}}, separators=(",", ":")) for i in range(60)]
    model = check(raws(*texts, *texts))  # still exact: the schema holds every key
    assert not model.enabled and model.fast < 40


def test_newest_ts_follows_metrics_rules_on_both_ways():
    latest = raws('{"id":"a","_ts":5}', '{"id":"b","_ts":9}', '{"id":"c","_ts":7}', '{"id":"d","_ts":"12"}')
    model = check(latest)
    assert model.newest_ts == 9 == metrics.newest_ts([sdk_json.loads(bytes(r)) for r in latest[:3]])
    changes = raws(
        '{"current":{"id":"a","_ts":11},"metadata":{"lsn":1,"crts":11}}',
        '{"current":{"id":"b","_ts":14},"metadata":{"lsn":2,"crts":14}}',
        '{"current":{"id":"b","_ts":12},"metadata":{"lsn":3,"crts":12}}',
        '{"metadata":{"lsn":4,"crts":13,"operationType":"delete"},"previous":{"id":"c"}}',
    )
    model = check(changes)
    assert model.newest_ts == 14 == metrics.newest_ts(changes)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("abcd"), inner, max_size=4),
    max_leaves=12,
)
_docs = st.dictionaries(st.sampled_from(["id", "x", "y", "z", "_ts"]), _values, min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(st.lists(_docs, min_size=1, max_size=12), st.sampled_from(["canonical", "msgspec", "ascii"]))
def test_any_documents_in_any_spelling_give_the_lines_and_schema_of_parsing_them(docs, spelling):
    def spelled(doc: dict) -> bytes:
        if spelling == "msgspec":
            try:
                return msgspec.json.encode(doc)
            except (OverflowError, msgspec.EncodeError):
                pass
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=spelling == "ascii").encode()

    items = raws(*(spelled(d) for d in docs + docs))  # each document twice: the repeat may go the fast way
    check(items)


def test_raw_pages_through_the_sink_give_the_parts_and_schemas_of_parsed_pages(s3, target):
    """Same bytes, same part boundaries' documents and the same per-part schema versions either way."""
    rng = random.Random(2)
    docs = []
    for i in range(1500):
        doc = {"id": f"d{i}", "n": i, "text": "".join(rng.choices("abcdé東😀", k=200)), "_ts": 1700000000 + i}
        if i % 7 == 0:
            doc["extra"] = {"f": rng.random(), "l": [1, 2.5, None]}
        if i == 1200:
            doc["late"] = "a field only the last part has"
        docs.append(doc)
    # A previous schema without `extra` and `late`: a part's tag says whether its own documents had them.
    previous = next_schema(None, {"id": ["string"], "n": ["integer"], "text": ["string"], "_ts": ["integer"]})
    parsed = make_sink(s3, target, feed_range_index=1, part_size_bytes=16 * 1024, previous_schema=previous)
    raw = make_sink(s3, target, feed_range_index=2, part_size_bytes=16 * 1024, previous_schema=previous)
    for i in range(0, len(docs), 100):
        page = docs[i : i + 100]
        parsed.write_page(page)
        raw.write_page(raws(*(_canonical(d) for d in page)))
    want, got = parsed.close(), raw.close()
    assert len(got) == len(want) > 3, "64 KiB parts must roll mid-page several times"
    assert read_parts(s3, target.bucket, got) == read_parts(s3, target.bucket, want)
    assert [(r.documents, r.schema_version) for r in got] == [(r.documents, r.schema_version) for r in want]
    assert {r.schema_version for r in got} == {2}  # every part has `extra` documents
    assert raw._schema.pairs() == parsed._schema.pairs() and ("late", "string") in raw._schema.pairs()
    assert raw.newest_ts == parsed.newest_ts == 1700001499


def test_raw_documents_mode_hands_over_each_documents_bytes_and_only_within():
    body = '{"_rid":"r","Documents":[{"id":"a","n":1},{"id":"b","s":"\\u00e9"}],"_count":2}'.encode()
    assert sdk_json.loads(body) == json.loads(body)
    with sdk_json.raw_documents():
        page = sdk_json.loads(body)
        assert sdk_json.loads(b'{"PartitionKeyRanges":[{"id":"0"}]}') == {"PartitionKeyRanges": [{"id": "0"}]}
        # A body msgspec refuses is parsed in full, exactly as json.loads would.
        refused = sdk_json.loads(b'{"Documents":[{"id":"a","x":NaN}]}')
        lone = sdk_json.loads(b'{"Documents":[{"id":"a","x":"\\ud800"}]}')  # msgspec refuses lone surrogates
    assert page["_rid"] == "r" and page["_count"] == 2
    assert [bytes(r) for r in page["Documents"]] == [b'{"id":"a","n":1}', b'{"id":"b","s":"\\u00e9"}']
    assert math.isnan(refused["Documents"][0]["x"]) and lone["Documents"] == [{"id": "a", "x": "\ud800"}]
    assert type(sdk_json.loads(body)["Documents"][0]) is dict
