"""`.venv/bin/python -m bench.restore [--docs 100000 [1000000 ...]]` (in `make bench`): the restore benchmark.

Measures the restore's own cost: `run_restore --exact` (transactional batches of one partition key value,
progress checkpoints in moto S3, Low priority, the state's key/hash index in SQLite, then the target's change
feed read to find documents to delete) of N ~1 KB documents into an empty container (partition key
/customerId, 5,000 customers) of the Cosmos gateway double. The state is `sandbox.seed.sample_document`s in
the materialized state's order, (partition key, id), generated on the fly (materialize has its own rows), so
the figures are the restore's, not materialize's. Three processes: the double (its own, auth off), moto, and
the restore client, whose CPU seconds and peak RSS (os.wait4 rusage) are the figures; the double's CPU
seconds are recorded beside them. Results go to bench/results/restore-<N>.json and a "Restore" section of
docs/performance.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from bench import common

SECTION = "## Restore"
DB, SOURCE, TARGET = "shop", "orders", "orders-restore"
PARTITION_KEY, CUSTOMERS = "/customerId", 5000  # sample_document(i) belongs to customer i % 5000


def serve(port_file: Path, ca_dir: Path) -> None:
    """The gateway double in this process: source and target containers, auth off (the client's token is
    never checked; the export benchmark measures the auth chain)."""
    from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
    from sandbox.doubles.tls import create_local_ca

    state = CosmosGatewayState("bench")
    state.create_container(DB, SOURCE, PARTITION_KEY)
    state.create_container(DB, TARGET, PARTITION_KEY)
    served = serve_cosmos(state, create_local_ca(ca_dir)).start()
    port_file.write_text(str(served.port))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


class _AnyToken:
    """The double runs with auth off: any bearer token will do (no secret involved)."""

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken("bench-token-not-checked", int(time.time()) + 3600)


def state_documents(docs: int, start: int = 0) -> Iterator[dict]:
    """sample_document(i) for i < docs in the materialized state's order: by customerId, then id."""
    from sandbox.seed import sample_document

    order = (i for customer in range(CUSTOMERS) for i in range(customer, docs, CUSTOMERS))
    for position, i in enumerate(order):
        if position >= start:
            yield sample_document(i, random.Random(i))


def client(docs: int, cosmos_url: str, ca_bundle: str, s3_url: str, bucket: str) -> None:
    """The restore, as the worker runs it; prints {"documents", "seconds", ...} as the last line."""
    import boto3

    from cosmos_export import restore
    from cosmos_export.export import bulk_gc
    from cosmos_export.settings import WorkerSettings
    from cosmos_export.source import cosmos_client

    settings = WorkerSettings(
        identity_mode="laptop",
        aws_region="us-east-1",
        cosmos_endpoint=cosmos_url,
        cosmos_account="bench",
        cosmos_database=DB,
        cosmos_containers=SOURCE,
        cosmos_tls_verify=ca_bundle,
        bucket=bucket,
        prefix="bench",
        s3_endpoint=s3_url,
        concurrency=8,
        log_level="WARNING",
    )
    definition = {"partitionKey": {"paths": [PARTITION_KEY], "kind": "Hash", "version": 2}}

    def documents(start: int = 0) -> Iterator[dict]:
        return state_documents(docs, start)

    def open_state(*_args: Any, **_kwargs: Any) -> restore.StateView:
        return restore.StateView(
            sequence=1,
            manifest_keys=["bench/manifests/0000000001.json"],
            container_definition=definition,
            report={},
            documents=documents,
        )

    restore.open_state = open_state
    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
    from cosmos_export import audit

    audit.configure_logging("WARNING")
    began = time.perf_counter()
    profiler = None
    if os.environ.get("BENCH_RESTORE_PROFILE"):  # pyinstrument text report to that file
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
        profiler.start()
    with bulk_gc():
        result, _ = restore.run_restore(
            settings,
            restore.RestoreRequest(container=SOURCE, target_container=TARGET, target_database=DB, exact=True),
            client=cosmos_client(settings, _AnyToken()),
            s3=s3,
        )
    seconds = time.perf_counter() - began
    if profiler is not None:
        profiler.stop()
        Path(os.environ["BENCH_RESTORE_PROFILE"]).write_text(profiler.output_text(show_all=False, timeline=False))
    print(
        json.dumps(
            {
                "documents": result.documents,
                "upserted": result.documents_upserted,
                "deletes": result.deletes_applied,
                "request_charge": result.request_charge,
                "seconds": seconds,
                "peak_rss_mb": common.peak_rss_mb(),
            }
        )
    )


def measure(docs: int, directory: Path) -> dict:
    from sandbox.services import start_moto

    directory.mkdir(parents=True, exist_ok=True)
    port_file = directory / "restore-double.port"
    port_file.unlink(missing_ok=True)
    double = subprocess.Popen(
        [sys.executable, "-m", "bench.restore", "serve", str(port_file), str(directory / "ca")],
        cwd=common.REPO,
        env={**os.environ, **common.CHILD_ENV},
    )
    try:
        with start_moto(log_dir=directory) as moto:
            deadline = time.monotonic() + 60
            while not port_file.exists():
                if time.monotonic() > deadline or double.poll() is not None:
                    raise RuntimeError("the gateway double did not start")
                time.sleep(0.1)
            bucket = f"bench-restore-{docs}"
            common.versioned_bucket(moto.url, bucket)
            argv = [
                sys.executable,
                "-m",
                "bench.restore",
                "client",
                str(docs),
                f"https://127.0.0.1:{port_file.read_text()}",
                str(directory / "ca" / "ca-bundle.pem"),
                moto.url,
                bucket,
            ]
            load = os.getloadavg()[0]
            result, cpu = common.run_measured(argv, directory / f"restore-client-{docs}.log")
    finally:
        double.terminate()
        _, _, server = os.wait4(double.pid, 0)
    if result["documents"] != docs or result["upserted"] != docs:
        raise RuntimeError(f"restored {result['documents']} documents ({result['upserted']} upserted), expected {docs}")
    return {
        "docs": docs,
        "seconds": result["seconds"],
        "docs_per_s": docs / result["seconds"],
        "cpu_seconds": cpu,
        "cpu_s_per_100k": cpu * 100_000 / docs,
        "peak_rss_mb": result["peak_rss_mb"],
        "request_charge": result["request_charge"],
        "server_cpu_seconds": server.ru_utime + server.ru_stime,
        "load_1min_before": load,
        "command": f".venv/bin/python -m bench.restore --docs {docs}",
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def render(results: dict[int, dict]) -> str:
    lines = [
        SECTION,
        "",
        "`run_restore --exact` of N ~1 KB documents into an empty container of the gateway double (auth off,",
        "partition key /customerId: 5,000 values, so 20 documents per value at 100k and 200 at 1M), the state",
        "streamed in (partition key, id) order as materialize gives it; concurrency 8, progress checkpoints of",
        "500 documents in moto S3, each cut into transactional batches of one partition key value (at most 100",
        "operations), Low priority, no RU budget. CPU and peak RSS are the restore process's own; *double CPU*",
        "is the gateway double's (the server side, not part of the restore's cost).",
        "",
        "| documents | wall s | docs/s | CPU s / 100k docs | peak RSS MB | RU | double CPU s | load | command |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for docs, r in sorted(results.items()):
        server = f"{r['server_cpu_seconds']:.0f}" if "server_cpu_seconds" in r else "-"
        lines.append(
            f"| {docs:,} | {r['seconds']:.1f} | {r['docs_per_s']:,.0f} | {r['cpu_s_per_100k']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['request_charge']:,.0f} | {server} | {r['load_1min_before']:.2f} | "
            f"`{r['command']}` ({r['at']}) |"
        )
    lines += common.rss_ratio_line("Restore", results, ".venv/bin/python -m bench.restore")
    return "\n".join(lines) + "\n"


BEGIN, END = (
    "<!-- restore benchmark: written by `.venv/bin/python -m bench.restore` -->",
    "<!-- end of restore benchmark -->",
)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
        return 0
    return common.main("restore", __doc__ or "", measure, render, (BEGIN, END))


if __name__ == "__main__":
    sys.exit(main())
