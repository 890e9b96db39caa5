"""Awkward documents exported byte-exact: parsed JSON equal to what was stored, lines in canonical form."""

from __future__ import annotations

import json

import pytest

from cosmos_export import jsonl, sdk_json
from tests.reliability.harness import record, user

# One character from every Unicode plane (0-16), astral ones included; planes 3-13 are mostly unassigned
# but still valid scalar values that JSON and UTF-8 carry.
PLANES = "".join(chr(plane * 0x10000 + 0x4E2D if plane == 0 else plane * 0x10000 + 0x100) for plane in range(17))
TWO_MB = 2 * 1024 * 1024


def deep(levels: int) -> dict:
    node: dict = {"leaf": "bottom"}
    for i in range(levels):
        node = {"l": i, "c": node} if i % 2 else {"a": [node]}
    return node


def awkward_docs() -> list[dict]:
    docs: list[dict] = [
        {"id": "big", "pk": "big", "blob": "é" * ((TWO_MB - 4096) // 2)},  # ~2 MB of UTF-8, under the limit
        {"id": "deep", "pk": "deep", "tree": deep(120)},
        {
            "id": "planes",
            "pk": "planes",
            "text": PLANES,
            "emoji": "👩‍👩‍👧‍👦🏳️‍🌈",
            "rtl": "שלום عربى",
            "controls": "\u0000\u001f\u007f\u2028\u2029",
            "key with \u00e9 and 𝄞": True,
        },
        {"id": "numbers", "pk": "numbers", "f": [1e-7, 1e300, -0.0, 0.1, 2**63, -(2**63), 2**64 + 1, 123456789.125]},
        {"id": "with space and ü", "pk": "odd"},
        {"id": "pct%20encoded", "pk": "odd"},
        {"id": "semi;colon&amp=1", "pk": "odd"},
        {"id": "n1", "pk": 42},
        {"id": "n2", "pk": -3.5},
        {"id": "b1", "pk": True},
        {"id": "b2", "pk": False},
        {"id": "z1", "pk": None},
        {"id": "missing-pk"},
        {"id": "empty-string-pk", "pk": ""},
        {"id": "astral-pk", "pk": "𝄞🙂"},
    ]
    return docs


def exported_lines(world) -> dict[str, bytes]:
    got = world.committed()
    by_id: dict[str, bytes] = {}
    for line in got.raw_lines:
        doc = json.loads(line)
        assert doc["id"] not in by_id, f"{doc['id']!r} exported twice"
        by_id[doc["id"]] = line
    return by_id


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_awkward_documents_round_trip_exactly(world, compression):
    docs = awkward_docs()
    world.seed(docs)
    world.run("incremental", compression=compression, page_size=5)
    assert sdk_json.installed()  # the SDK parsed these pages with msgspec (falling back for the surrogates)
    lines = exported_lines(world)
    assert set(lines) == {d["id"] for d in docs}
    for doc in docs:
        line = lines[doc["id"]]
        parsed = json.loads(line)
        assert user(parsed) == doc, doc["id"]
        # Canonical bytes: compact, UTF-8, no ASCII escaping; re-encoding gives the same bytes.
        assert line == jsonl.dumps_line(parsed).encode("utf-8"), doc["id"]
        assert line.decode("utf-8")  # valid UTF-8
    assert "\\u" not in lines["planes"].decode().split('"controls"')[0]  # astral chars are raw UTF-8
    assert len(lines["big"]) > TWO_MB - 8192
    record(
        f"Bad documents ({compression}): ~2 MB, 120-deep, all 17 Unicode planes, odd ids, "
        "number/bool/null/missing/astral partition keys, float/int edges",
        trials=1,
        documents=len(docs),
        outcome="exported byte-exact (parsed equality + canonical bytes), read back",
    )


def test_ids_real_cosmos_forbids_are_exported_if_stored(world):
    """Real Cosmos refuses '/', '\\\\', '?', '#' in ids on create; data imported with them must still export."""
    docs = [{"id": i, "pk": "odd"} for i in ("a/b", "c#d", "e?f", "g\\h", " lead and trail ")]
    world.seed(docs)
    world.run("incremental")
    lines = exported_lines(world)
    assert {json.loads(v)["id"] for v in lines.values()} == {d["id"] for d in docs}
    record("Odd ids ('/', '#', '?', '\\\\', spaces)", trials=1, documents=len(docs), outcome="exported byte-exact")


def test_lone_surrogates_stay_valid_utf8_and_round_trip(world):
    """Cosmos stores strings with lone surrogates; the line must stay UTF-8 and json.loads must give them back."""
    docs = [{"id": "sur", "pk": "s", "hi": "a\ud800b", "lo": "\udfff", "half": "\ud83dx"}]
    world.seed(docs)
    world.run("incremental")
    line = exported_lines(world)["sur"]
    line.decode("utf-8")  # strict: raises on surrogate bytes
    parsed = json.loads(line)
    assert user(parsed) == docs[0]
    assert b"\\ud800" in line and b"\\udfff" in line
    record(
        "Lone surrogates in strings",
        trials=1,
        documents=1,
        outcome="escaped as \\udXXX: valid UTF-8, json.loads returns the original string",
    )
