"""`python -m bench.materialize [--docs 100000 [1000000 ...]]` (in `make bench`): the materialize benchmark.

An export is written into moto S3 through the worker's own sink and commit (no Cosmos: the figures are
materialize's, not the export's): a snapshot of N ~1 KB documents (`sandbox.seed.sample_documents`, with the
system properties the change feed adds) over 4 feed ranges, then an incremental that replaces 10% of them.
Then a separate process runs `materialize_to` (open_state: every part streamed and verified into the SQLite
overlay; then the documents, system properties removed, to a local .jsonl.zst), and its CPU seconds and peak
RSS (os.wait4 rusage) are the figures. Results go to bench/results/materialize-<N>.json and a "Materialize"
section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
DB, CONTAINER, RANGES, CHANGED = "shop", "orders", 4, 0.10
BEGIN, END = (
    "<!-- materialize benchmark: written by `python -m bench.materialize` -->",
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
    status = Path("/proc/self/status").read_text()
    peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")) / 1024
    if report.documents != expected:
        raise SystemExit(f"materialized {report.documents} documents, expected {expected}")
    print(
        json.dumps(
            {"documents": report.documents, "records": report.records_read, "seconds": seconds, "peak_rss_mb": peak}
        )
    )


def measure(docs: int, directory: Path) -> dict:
    import boto3

    from sandbox.services import start_moto

    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with start_moto(log_dir=directory) as moto:
        bucket = f"bench-materialize-{docs}"
        s3 = boto3.client(
            "s3",
            endpoint_url=moto.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        seed(s3, bucket, docs)
        out = directory / f"materialized-{docs}.jsonl.zst"
        argv = [sys.executable, "-m", "bench.materialize", "client", bucket, moto.url, str(out), str(docs)]
        load = os.getloadavg()[0]
        with open(directory / f"materialize-client-{docs}.log", "wb") as log:
            process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log)
            assert process.stdout is not None
            printed = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"materialize client failed: see {directory / f'materialize-client-{docs}.log'}")
    result = json.loads(printed.decode().strip().splitlines()[-1])
    out.unlink(missing_ok=True)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "docs": docs,
        "records": result["records"],
        "seconds": result["seconds"],
        "docs_per_s": docs / result["seconds"],
        "cpu_seconds": cpu,
        "cpu_s_per_100k": cpu * 100_000 / docs,
        "peak_rss_mb": result["peak_rss_mb"],
        "load_1min_before": load,
        "command": f"python -m bench.materialize --docs {docs}",
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
    if 100_000 in results and 1_000_000 in results:
        small, big = results[100_000]["peak_rss_mb"], results[1_000_000]["peak_rss_mb"]
        lines += [
            "",
            f"Materialize peak RSS at 1M vs 100k: {big:.0f} MB / {small:.0f} MB = **{big / small:.2f}x** "
            "(target <= 1.2x and < 300 MB).",
        ]
    else:
        lines += ["", "1M: not measured yet (`python -m bench.materialize --docs 1000000`)."]
    return "\n".join(lines) + "\n"


def write_doc(results: dict[int, dict]) -> None:
    """Replace (or append) the Materialize section of docs/performance.md (after the notes marker, which the
    export benchmark keeps verbatim, so each benchmark can run alone)."""
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    section = f"{BEGIN}\n{render(results)}{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.write_text(text)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.materialize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dir", type=Path, default=REPO / ".sandbox" / "bench-materialize")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for docs in args.docs:
        result = measure(docs, args.dir.resolve())
        (RESULTS / f"materialize-{docs}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"materialize {docs}: {result['seconds']:.1f}s, {result['docs_per_s']:.0f} docs/s, CPU "
            f"{result['cpu_s_per_100k']:.1f}s/100k, peak RSS {result['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    results = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in RESULTS.glob("materialize-*.json")}
    write_doc(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
