"""`.venv/bin/python -m bench.materialize [--docs 100000 [1000000 ...]]` (in `make bench`): the materialize benchmark.

An export is written into moto S3 through the worker's own sink and commit (no Cosmos: the figures are
materialize's, not the export's): a snapshot of N ~1 KB documents (`sandbox.seed.sample_documents`, with the
system properties the change feed adds) over 4 feed ranges, then an incremental that replaces 10% of them.
Then a separate process runs `materialize_to` (open_state: every part streamed and verified into the SQLite
overlay; then the documents, system properties removed, to a local .jsonl.zst), and its CPU seconds and peak
RSS (os.wait4 rusage) are the figures. Results go to bench/results/materialize-<N>.json and a "Materialize"
section of docs/performance.md.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import common

DB, CONTAINER, RANGES, CHANGED = "shop", "orders", 4, 0.10
BEGIN, END = (
    "<!-- materialize benchmark: written by `.venv/bin/python -m bench.materialize` -->",
    "<!-- end of materialize benchmark -->",
)


def _with_system(doc: dict, lsn: int) -> dict:
    return {
        **doc,
        "_rid": f"rid{lsn:010d}",
        "_self": f"dbs/x/colls/y/docs/rid{lsn:010d}/",
        "_etag": f'"{lsn:016x}"',
        "_attachments": "attachments/",
        "_ts": 1_700_000_000 + lsn,
        "_lsn": lsn,
    }


def seed(s3: Any, bucket: str, docs: int) -> None:
    """Snapshot (sequence 1) of `docs` documents, then an incremental (2) replacing 10% of them."""
    from cosmos_export import layout
    from cosmos_export.commit import CommitStore, ContainerDefinition, Manifest
    from cosmos_export.schema import SchemaTracker, next_schema
    from cosmos_export.sink import FeedRangeSink
    from sandbox.seed import sample_document, sample_documents

    target = layout.ExportTarget(bucket, "bench", "bench", DB, CONTAINER)
    store = CommitStore(s3, target)
    definition = ContainerDefinition.of({"partitionKey": {"paths": ["/customerId"], "kind": "Hash", "version": 2}})
    rng = random.Random(11)
    changed = sorted(rng.sample(range(docs), int(docs * CHANGED)))

    def commit(mode: str, pages: Any) -> None:
        loaded = store.load()
        now = datetime.now(timezone.utc)
        run_id = layout.new_run_id(now)
        tracker = SchemaTracker()
        sinks = [
            FeedRangeSink(
                s3,
                target,
                run_id=run_id,
                started_at=now,
                feed_range=f'{{"r":{i}}}',
                feed_range_index=i,
                compression="zstd",
                part_size_bytes=64 << 20,
                kms_key_arn=None,
                schema=tracker,
                log=_Quiet(),
            )
            for i in range(RANGES)
        ]
        for index, page in pages:
            sinks[index].write_page(page)
        records = [r for sink in sinks for r in sink.close()]
        previous = loaded.checkpoint.schema_ if loaded.checkpoint else None
        schema = next_schema(previous, tracker)
        store.commit(
            loaded,
            Manifest(
                run_id=run_id,
                mode=mode,
                account="bench",
                database=DB,
                container=CONTAINER,
                started_at=now,
                finished_at=datetime.now(timezone.utc),
                parts=records,
                continuations={f'{{"r":{i}}}': f"c{i}" for i in range(RANGES)},
                schema_previous=previous,
                schema_=schema,
                container_definition=definition,
                change_feed_mode="LatestVersion",
            ),
        )

    def snapshot_pages() -> Any:
        page: list[dict] = []
        for i, doc in enumerate(sample_documents(docs)):
            page.append(_with_system(doc, i + 1))
            if len(page) == 1000:
                yield (i // 1000) % RANGES, page
                page = []
        if page:
            yield 0, page

    def change_pages() -> Any:
        for start in range(0, len(changed), 1000):
            page = [
                _with_system(sample_document(i, random.Random(i), revision=1), docs + i + 1)
                for i in changed[start : start + 1000]
            ]
            yield (start // 1000) % RANGES, page

    commit("snapshot", snapshot_pages())
    commit("incremental", change_pages())


class _Quiet:
    def info(self, *_a: Any, **_k: Any) -> None:
        pass

    warning = info


def client(bucket: str, s3_url: str, out: str, expected: int) -> None:
    """materialize_to as the CLI runs it; prints {"documents", "seconds", "peak_rss_mb"} as the last line."""
    import boto3

    from cosmos_export import layout, materialize
    from cosmos_export.export import bulk_gc

    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
    target = layout.ExportTarget(bucket, "bench", "bench", DB, CONTAINER)
    began = time.perf_counter()
    with bulk_gc():
        report = materialize.materialize_to(s3, target, materialize.destination(out, CONTAINER))
    seconds = time.perf_counter() - began
    peak = common.peak_rss_mb()
    if report.documents != expected:
        raise SystemExit(f"materialized {report.documents} documents, expected {expected}")
    print(
        json.dumps(
            {"documents": report.documents, "records": report.records_read, "seconds": seconds, "peak_rss_mb": peak}
        )
    )


def measure(docs: int, directory: Path) -> dict:
    from sandbox.services import start_moto

    directory.mkdir(parents=True, exist_ok=True)
    with start_moto(log_dir=directory) as moto:
        bucket = f"bench-materialize-{docs}"
        seed(common.versioned_bucket(moto.url, bucket), bucket, docs)
        out = directory / f"materialized-{docs}.jsonl.zst"
        argv = [sys.executable, "-m", "bench.materialize", "client", bucket, moto.url, str(out), str(docs)]
        load = os.getloadavg()[0]
        result, cpu = common.run_measured(argv, directory / f"materialize-client-{docs}.log")
    out.unlink(missing_ok=True)
    return {
        "docs": docs,
        "records": result["records"],
        "seconds": result["seconds"],
        "docs_per_s": docs / result["seconds"],
        "cpu_seconds": cpu,
        "cpu_s_per_100k": cpu * 100_000 / docs,
        "peak_rss_mb": result["peak_rss_mb"],
        "load_1min_before": load,
        "command": f".venv/bin/python -m bench.materialize --docs {docs}",
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def render(results: dict[int, dict]) -> str:
    lines = [
        "## Materialize",
        "",
        "`materialize_to` of a snapshot of N ~1 KB documents (4 feed ranges, zstd parts in moto S3) plus an",
        "incremental replacing 10% of them, to a local .jsonl.zst (system properties removed); every part's",
        "sha256 verified; CPU and peak RSS are the materialize process's own.",
        "",
        "| documents | records read | wall s | docs/s | CPU s / 100k docs | peak RSS MB | load | command |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for docs, r in sorted(results.items()):
        lines.append(
            f"| {docs:,} | {r['records']:,} | {r['seconds']:.1f} | {r['docs_per_s']:,.0f} | "
            f"{r['cpu_s_per_100k']:.1f} | {r['peak_rss_mb']:.0f} | {r['load_1min_before']:.2f} | "
            f"`{r['command']}` ({r['at']}) |"
        )
    lines += common.rss_ratio_line("Materialize", results, ".venv/bin/python -m bench.materialize")
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return 0
    return common.main("materialize", __doc__ or "", measure, render, (BEGIN, END))


if __name__ == "__main__":
    sys.exit(main())
