"""`cosmos-export materialize` as a separate process: exit codes, messages, the three suffixes, --to s3://."""

from __future__ import annotations

import gzip
import json

import pytest
import zstandard

from cosmos_export import contract, jsonl
from tests.runtime.test_cli import cli, worker_env  # noqa: F401  (fixture)

SYSTEM = set(contract.SYSTEM_PROPERTIES)


def read_lines(path, data: bytes | None = None) -> list[dict]:
    raw = data if data is not None else open(path, "rb").read()
    name = str(path)
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    elif name.endswith(".zst"):
        raw = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()
    return [json.loads(line) for line in raw.splitlines()]


@pytest.fixture()
def exported(chain, worker_env):
    docs = [{"id": f"d{i}", "pk": f"k{i % 13}", "v": i} for i in range(120)]
    chain.cosmos.upsert_many("shop", "orders", docs)
    assert cli(["run", "--mode", "snapshot"], worker_env).returncode == 0
    chain.cosmos.delete("shop", "orders", "d5", "k5")  # LatestVersion cannot see it
    chain.cosmos.upsert("shop", "orders", {**docs[6], "v": -6})
    assert cli(["run", "--mode", "incremental"], worker_env).returncode == 0
    return {**{d["id"]: d for d in docs}, "d6": {**docs[6], "v": -6}}


def test_materialize_to_local_files_prints_and_writes_the_report(exported, worker_env, tmp_path):
    for suffix in (".jsonl", ".jsonl.gz", ".jsonl.zst"):  # compression by suffix
        out = tmp_path / f"state{suffix}"
        result = cli(["materialize", "-c", "orders", "--to", str(out)], worker_env)
        assert result.returncode == 0, result.stderr[-2000:]
        got = read_lines(out)
        assert {d["id"]: d for d in got} == exported and len(got) == 120  # d5 resurrected: LatestVersion
        assert not SYSTEM & set().union(*got)
        report = json.loads((tmp_path / "state.report.json").read_text())
        assert (report["sequence"], report["documents"], report["unknown_delete_incrementals"]) == (2, 120, 1)
        assert report["output"] == str(out) and report["container_definition"]["partitionKey"]["paths"] == ["/pk"]
        assert "orders as of sequence 2" in result.stdout and "documents: 120; deletes applied: 0" in result.stdout
        assert (
            f"WARNING: 1 run(s) since the snapshot at sequence 1 (finished {report['snapshot_finished_at']})"
            in result.stdout
            and "documents deleted since then may still be in this state" in result.stdout
        )
        assert f"wrote {out} (120 document(s)); report {tmp_path / 'state.report.json'}" in result.stdout
    assert (tmp_path / "state.jsonl").read_bytes()[:1] == b"{"
    assert (tmp_path / "state.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "state.jsonl.zst").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"


def test_materialize_to_s3_with_system_properties_at_a_sequence(chain, exported, worker_env):
    result = cli(
        [
            "materialize",
            "-c",
            "orders",
            "--sequence",
            "1",
            "--keep-system-properties",
            "--to",
            f"s3://{chain.bucket}/materialized/",
        ],
        worker_env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    s3 = chain.session.client("s3", endpoint_url=chain.urls["s3"])
    body = s3.get_object(Bucket=chain.bucket, Key="materialized/orders.jsonl.zst")["Body"].read()
    got = read_lines("x.jsonl.zst", body)
    assert len(got) == 120 and all(SYSTEM - {"_lsn"} <= set(d) for d in got)
    assert {d["id"]: {k: v for k, v in d.items() if k not in SYSTEM} for d in got}["d6"]["v"] == 6  # as of 1
    report = json.loads(s3.get_object(Bucket=chain.bucket, Key="materialized/orders.report.json")["Body"].read())
    assert report["sequence"] == 1 and report["system_properties_kept"] and report["warnings"] == []


REFUSALS = [
    (["--sequence", "9"], "error: refused, nothing was written: --sequence 9 is not a committed sequence under "),
    (
        ["--sequence", "1", "--as-of", "2026-01-01T00:00:00Z"],
        "error: refused, nothing was written: both --sequence 1 and --as-of",
    ),
    (
        ["--as-of", "2000-01-01T00:00:00Z"],
        "error: refused, nothing was written: --as-of 2000-01-01T00:00:00+00:00 "
        "is before the first committed run under ",
    ),
    (["--as-of", "yesterday"], "error: --as-of='yesterday' is not an ISO 8601 time"),
    (["--as-of", "2026-01-01T00:00:00"], "error: --as-of='2026-01-01T00:00:00' has no time zone"),
]


def test_refusals_exit_2_with_the_reason_last_and_write_nothing(exported, worker_env, tmp_path):
    out = tmp_path / "state.jsonl"
    for args, message in REFUSALS:
        result = cli(["materialize", "-c", "orders", "--to", str(out), *args], worker_env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.splitlines()[-1].startswith(message), result.stderr
        assert list(tmp_path.iterdir()) == []


def test_no_committed_state_and_a_bad_suffix_are_refused(chain, worker_env, tmp_path):
    result = cli(["materialize", "-c", "orders", "--to", str(tmp_path / "x.jsonl")], worker_env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        "error: refused, nothing was written: no committed export under "
        f"s3://{chain.bucket}/exports/acct/shop/orders/manifests/"
    )
    result = cli(["materialize", "-c", "orders", "--to", str(tmp_path / "x.csv")], worker_env)
    assert result.returncode == 2 and "has no JSON Lines suffix" in result.stderr.splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def test_a_corrupted_part_exits_1_and_writes_nothing(chain, exported, worker_env, tmp_path):
    s3 = chain.session.client("s3", endpoint_url=chain.urls["s3"])
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=chain.bucket, Prefix="exports/acct/shop/orders/data/")["Contents"]
    ]
    manifest = json.loads(
        s3.get_object(Bucket=chain.bucket, Key="exports/acct/shop/orders/manifests/0000000001.json")["Body"].read()
    )
    part = manifest["parts"][0]
    assert part["key"] in keys
    # A versioned bucket keeps the original: point the manifest's part at a damaged new version instead.
    damaged = s3.put_object(Bucket=chain.bucket, Key=part["key"], Body=jsonl.new_compressor("zstd").flush())
    part["version_id"] = damaged["VersionId"]
    s3.put_object(
        Bucket=chain.bucket,
        Key="exports/acct/shop/orders/manifests/0000000001.json",
        Body=json.dumps(manifest).encode(),
    )
    result = cli(["materialize", "-c", "orders", "--to", str(tmp_path / "x.jsonl")], worker_env)
    assert result.returncode == 1
    assert f"error: part s3://{chain.bucket}/{part['key']} of sequence 1 is corrupted: sha256 " in result.stderr
    assert list(tmp_path.iterdir()) == []
