"""A checkpoint that is corrupt, from another container or from a newer format is refused; nothing is overwritten."""

from __future__ import annotations

import json

import pytest

from cosmos_export import export
from cosmos_export.layout import checkpoint_key
from tests.reliability.harness import make_docs, record


def _corrupt(body: bytes, world) -> bytes:
    return body[: len(body) // 2]


def _other_container(body: bytes, world) -> bytes:
    doc = json.loads(body)
    doc["container"] = "someone-else"
    return json.dumps(doc).encode()


def _newer_format(body: bytes, world) -> bytes:
    doc = json.loads(body)
    doc["format_version"] = 4
    doc["new_field_of_v4"] = {"x": 1}
    return json.dumps(doc).encode()


CASES = {
    "corrupt (truncated JSON)": (_corrupt, "is not valid JSON"),
    "from another container": (_other_container, "belongs to relacct/rel/someone-else, not relacct/rel/"),
    "from a newer format": (
        _newer_format,
        "has format_version 4, newer than this worker's 3; it was left unchanged: upgrade the worker image",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["incremental", "snapshot"])
def test_bad_checkpoint_refused_nothing_overwritten(world, case, mode):
    mangle, message = CASES[case]
    docs = make_docs(300)
    world.seed(docs)
    world.run("incremental")
    key = checkpoint_key(world.target)
    good = world.checkpoint_bytes()
    bad = mangle(good, world)
    world.s3.put_object(Bucket=world.bucket, Key=key, Body=bad)
    world.seed(make_docs(50, version=2))
    before = world.all_keys()
    with pytest.raises(export.ExportError) as e:
        world.run(mode)
    assert message in str(e.value) and f"s3://{world.bucket}/{key}" in str(e.value)
    assert world.checkpoint_bytes() == bad  # byte for byte what was there
    assert world.all_keys() == before  # no part, manifest or checkpoint version written
    if mode == "incremental":
        record(
            f"Checkpoint {case}",
            trials=2,
            documents=300,
            outcome=f"refused (incremental and snapshot): '{message[:60]}...'; no object written",
        )
