"""The sink against a real moto S3 server: bytes, rolls, metadata, tags, memory, failures."""

import hashlib
import json
import random
import uuid
from datetime import datetime, timezone

import boto3
import botocore.exceptions
import pytest

from cosmos_export import contract, jsonl, layout
from cosmos_export.contract import Meta
from cosmos_export.schema import SchemaTracker, next_schema
from cosmos_export.sink import MIN_CHUNK_BYTES, FeedRangeSink
from cosmos_export.storage import client_config as s3_client_config

START = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
RANGE = '{"Range":{"min":"","max":"05C1DFFFFFFFFC"}}'


class ListLog:
    def __init__(self):
        self.lines = []

    def info(self, event, **fields):
        self.lines.append((event, fields))

    warning = info


@pytest.fixture
def s3(moto_server):
    client = boto3.client(
        "s3",
        endpoint_url=moto_server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=s3_client_config(),
    )
    return client


@pytest.fixture
def target(s3):
    bucket = f"export-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return layout.ExportTarget(bucket, "exports", "acct", "db", "orders")


def make_sink(s3, target, log=None, **kw):
    args = dict(
        run_id=layout.new_run_id(START),
        started_at=START,
        feed_range=RANGE,
        feed_range_index=2,
        compression="zstd",
        part_size_bytes=64 * 1024,
        kms_key_arn=None,
        schema=SchemaTracker(),
        log=log or ListLog(),
    )
    args.update(kw)
    return FeedRangeSink(s3, target, **args)


def docs(n, seed=1, size=300):
    rng = random.Random(seed)
    return [
        {
            "id": f"d{i}",
            "pk": f"p{i % 17}",
            "n": i,
            "f": rng.random(),
            "text": "".join(rng.choices("abcdefghé東😀", k=size)),
            "nested": {"a": [1, 2.5, None, True], "b": {"c": "x"}},
        }
        for i in range(n)
    ]


def read_parts(s3, bucket, records):
    out = []
    for r in records:
        body = s3.get_object(Bucket=bucket, Key=r.key, VersionId=r.version_id)["Body"].read()
        assert len(body) == r.bytes and hashlib.sha256(body).hexdigest() == r.sha256
        out.append(jsonl.decompress(body, jsonl.compression_of_key(r.key)))
    return out


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_bytes_round_trip_across_rolls(s3, target, compression):
    written = docs(3000)
    schema = SchemaTracker()
    log = ListLog()
    sink = make_sink(s3, target, log=log, compression=compression, schema=schema)
    for i in range(0, len(written), 250):
        sink.write_page(written[i : i + 250])
    records = sink.close()
    assert len(records) > 3, "64 KiB parts must roll several times"
    assert [r.part_number for r in records] == list(range(1, len(records) + 1))
    raw = read_parts(s3, target.bucket, records)
    # Exact bytes: the canonical (stdlib json) form of each document, one per line, across all parts.
    assert b"".join(raw) == jsonl.encode_lines_stdlib(written)
    assert [json.loads(line) for part in raw for line in part.splitlines()] == written
    assert sum(r.documents for r in records) == len(written)
    assert [r.documents for r in records] == [p.count(b"\n") for p in raw]
    assert [r.uncompressed_bytes for r in records] == [len(p) for p in raw]
    assert all(r.bytes >= 64 * 1024 for r in records[:-1])
    assert records[0].key.endswith("/range=0002/part-00001" + jsonl.suffix(compression))
    assert schema.fields() == next_schema(None, schema).fields and "nested.a[]" in schema.fields()
    assert [e for e, _ in log.lines] == ["object_written"] * len(records)
    assert log.lines[0][1] == {
        "key": records[0].key,
        "version_id": records[0].version_id,
        "bytes": records[0].bytes,
        "docs": records[0].documents,
        "sha256": records[0].sha256,
        "uncompressed_bytes": records[0].uncompressed_bytes,
        "feed_range_index": 2,
    }


def test_metadata_and_tags(s3, target):
    previous = next_schema(None, {"id": ["string"]})
    sink = make_sink(s3, target, previous_schema=previous, part_size_bytes=10**9)
    sink.write_page([{"id": "a"}, {"id": "b"}])
    [only] = sink.close()
    head = s3.head_object(Bucket=target.bucket, Key=only.key)
    run_id = only.key.split("/run=")[1].split("/")[0]
    assert head["Metadata"] == {
        Meta.RUN_ID: run_id,
        Meta.ACCOUNT: "acct",
        Meta.DATABASE: "db",
        Meta.CONTAINER: "orders",
        Meta.FEED_RANGE: RANGE,
        Meta.FORMAT_VERSION: str(contract.MANIFEST_FORMAT_VERSION),
    }
    assert head["ContentType"] == "application/zstd"
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=target.bucket, Key=only.key)["TagSet"]}
    assert tags == {Meta.DOCUMENT_COUNT: "2", Meta.SHA256: only.sha256, Meta.SCHEMA_VERSION: "1"}
    # A part with a field the previous schema lacks carries the bumped version.
    sink = make_sink(s3, target, previous_schema=previous, part_size_bytes=10**9, feed_range_index=3)
    sink.write_page([{"id": "c", "new": 1}])
    [bumped] = sink.close()
    assert bumped.schema_version == 2
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=target.bucket, Key=bumped.key)["TagSet"]}
    assert tags[Meta.SCHEMA_VERSION] == "2"


def test_sse_kms_params_are_sent(s3, target):
    kms = boto3.client(
        "kms",
        endpoint_url=s3.meta.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    key_arn = kms.create_key()["KeyMetadata"]["Arn"]
    sent = []
    s3.meta.events.register("before-call.s3.CreateMultipartUpload", lambda params, **_: sent.append(dict(params)))
    try:
        sink = make_sink(s3, target, kms_key_arn=key_arn)
        sink.write_page([{"id": "a"}])
        [part] = sink.close()
    finally:
        s3.meta.events.unregister("before-call.s3.CreateMultipartUpload")
    headers = sent[0]["headers"] if "headers" in sent[0] else {}
    assert headers.get("x-amz-server-side-encryption") == "aws:kms"
    assert headers.get("x-amz-server-side-encryption-aws-kms-key-id") == key_arn
    assert headers.get("x-amz-server-side-encryption-bucket-key-enabled") == "true"
    head = s3.head_object(Bucket=target.bucket, Key=part.key)
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == key_arn


def test_lone_surrogates_and_edge_numbers_are_lossless(s3, target):
    tricky = [
        {"id": "s", "lone": "a\ud800b", "low": "\udfff", "pair": "😀", "ctl": "\x00\u2028", "é\ud83d": 1},
        {"id": "n", "tiny": 1e-7, "big": 1e16, "huge": 2**70, "neg": -(2**63) - 1, "zero": -0.0, "nan": float("nan")},
    ]
    sink = make_sink(s3, target)
    sink.write_page(tricky)
    [raw] = read_parts(s3, target.bucket, sink.close())
    raw.decode("utf-8")  # valid UTF-8 despite the surrogates
    assert raw == jsonl.encode_lines_stdlib(tricky)
    assert b'"lone":"a\\ud800b"' in raw and b'"tiny":1e-07' in raw and b'"huge":1180591620717411303424' in raw
    back = [json.loads(line) for line in raw.splitlines()]
    assert back[0] == tricky[0]
    assert back[1]["nan"] != back[1]["nan"] and {k: v for k, v in back[1].items() if k != "nan"} == {
        k: v for k, v in tricky[1].items() if k != "nan"
    }


def test_memory_is_bounded_by_one_chunk(s3, target):
    # ~40 MiB of hex (~2:1) documents through 6 MiB objects and 5 MiB chunks.
    rng = random.Random(3)
    sink = make_sink(s3, target, compression="gzip", part_size_bytes=6 * 1024 * 1024, chunk_bytes=MIN_CHUNK_BYTES)
    total = 0
    for page in range(80):
        batch = [{"id": f"{page}-{i}", "blob": rng.randbytes(384).hex()} for i in range(640)]
        total += len(jsonl.encode_lines(batch))
        sink.write_page(batch)
    records = sink.close()
    compressed = sum(r.bytes for r in records)
    assert compressed > 3 * 6 * 1024 * 1024 and len(records) >= 4
    # One chunk plus at most one compressed batch, never the object or the stream.
    assert sink.peak_buffered_bytes < MIN_CHUNK_BYTES + 512 * 1024, sink.peak_buffered_bytes
    assert sum(r.documents for r in records) == 80 * 640


def test_connection_reset_mid_upload_is_retried(s3, target):
    fails = {"left": 2}

    def reset(request, **_):
        if fails["left"]:
            fails["left"] -= 1
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=request.url)

    s3.meta.events.register("before-send.s3.UploadPart", reset)
    try:
        written = docs(400)
        sink = make_sink(s3, target)
        sink.write_page(written)
        records = sink.close()
    finally:
        s3.meta.events.unregister("before-send.s3.UploadPart", reset)
    assert fails["left"] == 0
    assert b"".join(read_parts(s3, target.bucket, records)) == jsonl.encode_lines_stdlib(written)


def test_persistent_failure_aborts_and_leaves_no_object(s3, target):
    def reset(request, **_):
        raise botocore.exceptions.ConnectionClosedError(endpoint_url=request.url)

    # Few attempts keep the test quick; retries exhausted must abort, not complete.
    s3 = boto3.client(
        "s3",
        endpoint_url=s3.meta.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=s3_client_config(max_attempts=2),
    )
    sink = make_sink(s3, target, part_size_bytes=10**9)
    sink.write_page(docs(50))
    s3.meta.events.register("before-send.s3.UploadPart", reset)
    try:
        with pytest.raises(botocore.exceptions.ConnectionClosedError):
            sink.close()
    finally:
        s3.meta.events.unregister("before-send.s3.UploadPart", reset)
    assert s3.list_objects_v2(Bucket=target.bucket).get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=target.bucket).get("Uploads", []) == []
    with pytest.raises(RuntimeError, match="is closed"):
        sink.write_page([{"id": "x"}])


def test_bad_settings_are_refused(s3, target):
    with pytest.raises(ValueError, match=r"chunk_bytes=1024 is below the S3 minimum part size"):
        make_sink(s3, target, chunk_bytes=1024)
    with pytest.raises(ValueError, match=r"zstd level=30 is out of range: use 1..22"):
        make_sink(s3, target, compression_level=30)
    with pytest.raises(ValueError, match=r"part_size_bytes=0 must be positive"):
        make_sink(s3, target, part_size_bytes=0)


def test_bad_settings_and_a_closed_sink_have_exact_messages(s3, target):
    # docs/mutation.md, sink: the messages in full (the test above matches substrings).
    with pytest.raises(ValueError) as err:
        make_sink(s3, target, chunk_bytes=1024)
    assert str(err.value) == f"chunk_bytes=1024 is below the S3 minimum part size {MIN_CHUNK_BYTES} (5 MiB)"
    with pytest.raises(ValueError) as err:
        make_sink(s3, target, part_size_bytes=0)
    assert str(err.value) == "part_size_bytes=0 must be positive: use e.g. 128 MiB"
    sink = make_sink(s3, target)
    assert sink.close() == []
    with pytest.raises(RuntimeError) as closed:
        sink.write_page([{"id": "x"}])
    assert str(closed.value) == "sink for feed range 2 is closed: create a new sink per run"


def test_an_abort_that_fails_is_logged_with_the_key_and_the_error(s3, target):
    # The original failure matters more: a failed AbortMultipartUpload is logged, not raised.
    def refuse(**_):
        raise RuntimeError("abort refused")

    log = ListLog()
    sink = make_sink(s3, target, log=log, part_size_bytes=10**9)
    sink.write_page([{"id": "a"}])
    [upload] = s3.list_multipart_uploads(Bucket=target.bucket)["Uploads"]
    s3.meta.events.register("before-call.s3.AbortMultipartUpload", refuse)
    try:
        sink.abort()
    finally:
        s3.meta.events.unregister("before-call.s3.AbortMultipartUpload", refuse)
    assert log.lines == [("abort_multipart_upload_failed", {"key": upload["Key"], "error": "abort refused"})]
    with pytest.raises(RuntimeError, match="is closed"):
        sink.write_page([{"id": "b"}])
    sink.abort()  # nothing open any more: no second abort, no second line
    assert len(log.lines) == 1


def test_an_object_shorter_than_written_is_refused_and_not_recorded(s3, target):
    # The size check after CompleteMultipartUpload: S3 reporting another size than the bytes sent.
    def short(parsed, **_):
        parsed["ContentLength"] -= 1

    log = ListLog()
    sink = make_sink(s3, target, log=log, part_size_bytes=10**9)
    sink.write_page(docs(5))
    s3.meta.events.register("after-call.s3.HeadObject", short)
    try:
        with pytest.raises(RuntimeError) as err:
            sink.close()
    finally:
        s3.meta.events.unregister("after-call.s3.HeadObject", short)
    [obj] = s3.list_objects_v2(Bucket=target.bucket)["Contents"]
    size = obj["Size"]
    assert str(err.value) == (
        f"s3://{target.bucket}/{obj['Key']} has {size - 1} bytes after upload, "
        f"expected {size}: the object is left uncommitted; rerun the export"
    )
    assert s3.get_object_tagging(Bucket=target.bucket, Key=obj["Key"])["TagSet"] == []  # never tagged
    assert log.lines == []  # no object_written


def test_each_part_schema_holds_its_own_documents_across_pages_and_rolls(s3, target):
    # A part's schema version (its tag) comes from its own documents only: `first`, the index of the
    # part's first document in the page, must be 0 for a part carried over from the previous page and
    # the roll's index for a part opened mid-page.
    previous = next_schema(None, {"id": ["string"], "blob": ["string"]})
    rng = random.Random(5)
    # One page: doc 0 alone has "early"; ~1 MiB of hex rolls 64 KiB parts several times inside the page.
    page = [{"id": f"d{i}", "blob": rng.randbytes(512).hex()} for i in range(1000)]
    page[0]["early"] = 1
    sink = make_sink(s3, target, previous_schema=previous)
    sink.write_page(page)
    rolled = sink.close()
    assert len(rolled) >= 3
    assert [r.schema_version for r in rolled] == [2] + [1] * (len(rolled) - 1)
    # Two pages into one open part: the second page's first document alone has "late".
    sink = make_sink(s3, target, previous_schema=previous, part_size_bytes=10**9, feed_range_index=3)
    sink.write_page([{"id": "a", "blob": "x"}])
    sink.write_page([{"id": "b", "blob": "y", "late": True}, {"id": "c", "blob": "z"}])
    [carried] = sink.close()
    assert carried.schema_version == 2
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=target.bucket, Key=carried.key)["TagSet"]}
    assert tags[Meta.SCHEMA_VERSION] == "2"


def test_a_roll_at_a_pages_edge_keeps_each_part_schema_its_own(s3, target):
    # One document of 600 KiB fills a batch and a 64 KiB part on its own: the part rolls right after it.
    previous = next_schema(None, {"id": ["string"], "blob": ["string"]})
    rng = random.Random(6)

    def big(**extra):
        return {"id": "big", "blob": rng.randbytes(300 * 1024).hex(), **extra}

    cases = [
        ([big(early=1)], [2]),  # the page ends with the roll: nothing is left open
        ([big(early=1), {"id": "s", "blob": "x"}], [2, 1]),  # the second part starts at index 1
        ([big(), {"id": "s", "blob": "x", "late": True}], [1, 2]),  # the first part ends at index 0
    ]
    for number, (page, versions) in enumerate(cases):
        sink = make_sink(s3, target, previous_schema=previous, feed_range_index=number)
        sink.write_page(page)
        records = sink.close()
        assert [r.schema_version for r in records] == versions, number
        assert [r.documents for r in records] == [1] * len(page), number


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_the_compression_level_is_applied_to_every_part(s3, target, compression):
    # The same documents at the fastest and the strongest level: the strongest writes fewer bytes (a level
    # dropped on the way to the compressor would give both the default), each decompresses to the same lines.
    written = docs(400)
    sizes = {}
    for number, level in enumerate([1, {"gzip": 9, "zstd": 19}[compression]]):
        sink = make_sink(s3, target, compression=compression, compression_level=level, feed_range_index=number)
        sink.write_page(written)
        records = sink.close()
        assert b"".join(read_parts(s3, target.bucket, records)) == jsonl.encode_lines_stdlib(written)
        sizes[level] = sum(r.bytes for r in records)
    fast, strong = sizes.values()
    assert strong < fast, sizes
