"""`cosmos-export parts` and `cosmos-export materialize --format parquet` as separate processes."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from tests.runtime.test_cli import cli, worker_env  # noqa: F401  (fixture)
from tests.runtime.test_materialize_cli import exported  # noqa: F401  (fixture)


def test_parts_prints_exactly_the_committed_parts(exported, worker_env, chain):
    result = cli(["parts", "-c", "orders", "--format", "json"], worker_env)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert {r["sequence"] for r in rows} == {1, 2} and sum(r["documents"] for r in rows if r["sequence"] == 1) == 120
    assert all(r["url"].startswith(f"s3://{worker_env['EXPORT_BUCKET']}/") and "/data/dt=" in r["url"] for r in rows)
    text = cli(["parts", "-c", "orders", "--sequence", "2"], worker_env)
    assert text.returncode == 0
    lines = [line.split("\t") for line in text.stdout.splitlines()]
    assert lines == [[r["url"], "2", r["run_id"], str(r["documents"])] for r in rows if r["sequence"] == 2]
    missing = cli(["parts", "-c", "orders", "--sequence", "9"], worker_env)
    assert missing.returncode == 1 and "--sequence 9 is not committed under s3://" in missing.stderr


def test_materialize_parquet_to_a_folder_and_refresh_in_place(exported, worker_env, tmp_path):
    result = cli(
        ["materialize", "-c", "orders", "--format", "parquet", "--to", str(tmp_path / "t"), "--sequence", "1"],
        worker_env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = pq.read_table(tmp_path / "t" / "part-00000.parquet")
    assert table.num_rows == 120 and set(table.column("_sequence").to_pylist()) == {1}
    assert table.schema.field("v").type == "int64"  # promoted: every `v` is an integer
    docs = {r["id"]: json.loads(r["document"]) for r in table.to_pylist()}
    assert docs["d6"]["v"] == 6 and "_ts" in docs["d6"]  # the document as exported, system properties kept
    refreshed = cli(["materialize", "-c", "orders", "--format", "parquet"], worker_env)
    assert refreshed.returncode == 0, refreshed.stderr[-2000:]
    assert "orders: tables at sequence 2; current state already current" in refreshed.stdout  # the run refreshed it
    refused = cli(["materialize", "-c", "orders", "--format", "parquet", "--sequence", "1"], worker_env)
    assert refused.returncode == 2 and "--sequence/--as-of need --to" in refused.stderr
