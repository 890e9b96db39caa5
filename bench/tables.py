"""`.venv/bin/python -m bench.tables [--docs 100000 [1000000 ...]]` (in `make bench`): the analytics tables' refresh.

The export of bench.materialize (a snapshot of N ~1 KB documents over 4 feed ranges in moto S3, then an
incremental replacing 10% of them). A separate process then runs `tables.refresh` twice: the first one
writes both change-log files and the current state at sequence 2 (initial); then the pointer and the
sequence-2 change file are removed and the refresh runs again, doing exactly what the refresh after the 10%
incremental does (its change file + a new current-state version). Its seconds and the process's peak RSS
(os.wait4 rusage) are the figures, with the DuckDB (+ httpfs, from moto S3) time of a count by a field over
the Parquet current state and over the raw JSON Lines parts the manifests list. Results go to
bench/results/tables-<N>.json and a "Tables" section of docs/performance.md.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import common
from bench.materialize import CONTAINER, DB, seed

BEGIN, END = (
    "<!-- tables benchmark: written by `.venv/bin/python -m bench.tables` -->",
    "<!-- end of tables benchmark -->",
)


def _duckdb(s3_url: str):
    import duckdb
    import duckdb_extension_httpfs

    con = duckdb.connect()
    path = Path(duckdb_extension_httpfs.__path__[0], "extensions", f"v{duckdb.__version__}", "httpfs.duckdb_extension")
    con.execute(f"LOAD '{path}'")
    con.execute(
        "CREATE SECRET moto (TYPE s3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1', "
        f"ENDPOINT '{s3_url.removeprefix('http://')}', URL_STYLE 'path', USE_SSL false)"
    )
    return con


def client(bucket: str, s3_url: str, expected: int) -> None:
    """Two refreshes and the two DuckDB queries; prints the figures as JSON on the last line."""
    import boto3

    from cosmos_export import layout, tables
    from cosmos_export.commit import CommitStore
    from cosmos_export.export import bulk_gc

    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
    target = layout.ExportTarget(bucket, "bench", "bench", DB, CONTAINER)
    with bulk_gc():
        began = time.perf_counter()
        first = tables.refresh(s3, target)
        initial = time.perf_counter() - began
        manifests = CommitStore(s3, target).committed_manifests()
        s3.delete_object(Bucket=bucket, Key=tables.pointer_key(target))
        s3.delete_object(Bucket=bucket, Key=tables.changes_key(target, manifests[-1]))
        began = time.perf_counter()
        again = tables.refresh(s3, target)
        after_incremental = time.perf_counter() - began
    if first.documents != expected or again.documents != expected or again.changes_written != [2]:
        raise SystemExit(f"refreshed {first.documents}/{again.documents} documents, expected {expected}")
    peak = common.peak_rss_mb()
    con = _duckdb(s3_url)
    files = [u.strip() for u in again.files]
    began = time.perf_counter()
    parquet = con.execute("SELECT status, count(*) FROM read_parquet(?) GROUP BY ALL ORDER BY ALL", [files]).fetchall()
    parquet_s = time.perf_counter() - began
    parts = [f"s3://{bucket}/{p.key}" for m in manifests for p in m.parts]
    began = time.perf_counter()
    raw = con.execute(
        "SELECT status, count(*) FROM read_json(?, format = 'newline_delimited', columns = {'status': 'VARCHAR'}) "
        "GROUP BY ALL ORDER BY ALL",
        [parts],
    ).fetchall()
    jsonl_s = time.perf_counter() - began
    assert sum(n for _, n in parquet) == expected and sum(n for _, n in raw) == sum(m.documents for m in manifests)
    print(
        json.dumps(
            {
                "documents": again.documents,
                "initial_seconds": initial,
                "refresh_seconds": after_incremental,
                "peak_rss_mb": peak,
                "parquet_files": len(files),
                "duckdb_parquet_seconds": parquet_s,
                "duckdb_jsonl_seconds": jsonl_s,
                "jsonl_rows": sum(n for _, n in raw),
            }
        )
    )


def measure(docs: int, directory: Path) -> dict:
    from sandbox.services import start_moto

    directory.mkdir(parents=True, exist_ok=True)
    with start_moto(log_dir=directory) as moto:
        bucket = f"bench-tables-{docs}"
        seed(common.versioned_bucket(moto.url, bucket), bucket, docs)
        argv = [sys.executable, "-m", "bench.tables", "client", bucket, moto.url, str(docs)]
        load = os.getloadavg()[0]
        result, cpu = common.run_measured(argv, directory / f"tables-client-{docs}.log")
    return {
        "docs": docs,
        **result,
        "seconds": result["refresh_seconds"],
        "docs_per_s": docs / result["refresh_seconds"],
        "cpu_seconds": cpu,
        "cpu_s_per_100k": cpu * 100_000 / docs,
        "load_1min_before": load,
        "command": f".venv/bin/python -m bench.tables --docs {docs}",
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def render(results: dict[int, dict]) -> str:
    lines = [
        "## Tables",
        "",
        "`tables.refresh` on the materialize benchmark's export (a snapshot of N ~1 KB documents + an incremental",
        "replacing 10%): *initial* writes both change-log files and the current state; *refresh* is the one after",
        "the 10% incremental (its change file + a new current-state version, rebuilt from the whole chain). CPU",
        "seconds are the client process's own (both refreshes and the two DuckDB queries; moto's not counted), peak",
        "RSS its high-water mark before DuckDB is loaded (both refreshes). DuckDB 1.5.5 + httpfs from moto S3:",
        "`SELECT status, count(*) ... GROUP BY ALL` over the Parquet current state and over the raw JSON Lines parts.",
        "",
        "| documents | initial s | refresh s | client CPU s | peak RSS MB | Parquet files | DuckDB Parquet s "
        "| DuckDB JSONL s (rows) | load | command |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for docs, r in sorted(results.items()):
        lines.append(
            f"| {docs:,} | {r['initial_seconds']:.1f} | {r['refresh_seconds']:.1f} | {r['cpu_seconds']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['parquet_files']} | {r['duckdb_parquet_seconds']:.2f} | "
            f"{r['duckdb_jsonl_seconds']:.2f} ({r['jsonl_rows']:,}) | {r['load_1min_before']:.2f} | "
            f"`{r['command']}` ({r['at']}) |"
        )
    lines += common.rss_ratio_line("Tables", results, ".venv/bin/python -m bench.tables")
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    return common.main("tables", __doc__ or "", measure, render, (BEGIN, END))


if __name__ == "__main__":
    sys.exit(main())
