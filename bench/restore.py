"""`python -m bench.restore [--docs 100000 [1000000 ...]]` (in `make bench`): the restore benchmark.

Measures the restore's own cost: `run_restore --exact` (upserts in batches with progress checkpoints in moto
S3, Low priority, the state's key/hash index in SQLite, then the target's change feed read to find documents
to delete) of N ~1 KB documents into an empty container of the Cosmos gateway double. The state is
`sandbox.seed.sample_documents(N)` streamed as the materialized state would be (materialize has its own
rows), so the figures are the restore's, not materialize's. Three processes: the double (its own, auth off),
moto, and the restore client, whose CPU seconds and peak RSS (os.wait4 rusage) are the figures. Results go
to bench/results/restore-<N>.json and a "Restore" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "performance.md"
SECTION = "## Restore"
DB, SOURCE, TARGET = "shop", "orders", "orders-restore"


def serve(port_file: Path, ca_dir: Path) -> None:
    """The gateway double in this process: source and target containers, auth off (the client's token is
    never checked; the export benchmark measures the auth chain)."""
    from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
    from sandbox.doubles.tls import create_local_ca

    state = CosmosGatewayState("bench")
    state.create_container(DB, SOURCE)
    state.create_container(DB, TARGET)
    served = serve_cosmos(state, create_local_ca(ca_dir)).start()
    port_file.write_text(str(served.port))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


class _AnyToken:
    """The double runs with auth off: any bearer token will do (no secret involved)."""

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken("bench-token-not-checked", int(time.time()) + 3600)


def client(docs: int, cosmos_url: str, ca_bundle: str, s3_url: str, bucket: str) -> None:
    """The restore, as the worker runs it; prints {"documents", "seconds", ...} as the last line."""
    import boto3

    from cosmos_export import restore
    from cosmos_export.export import bulk_gc
    from cosmos_export.settings import WorkerSettings
    from cosmos_export.source import cosmos_client
    from sandbox.seed import sample_documents

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
    definition = {"partitionKey": {"paths": ["/pk"], "kind": "Hash", "version": 2}}

    def documents(start: int = 0) -> Iterator[dict]:
        return itertools.islice(sample_documents(docs), start, None)

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
    status = Path("/proc/self/status").read_text()
    peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")) / 1024
    print(
        json.dumps(
            {
                "documents": result.documents,
                "upserted": result.documents_upserted,
                "deletes": result.deletes_applied,
                "request_charge": result.request_charge,
                "seconds": seconds,
                "peak_rss_mb": peak,
            }
        )
    )


def measure(docs: int, directory: Path) -> dict:
    import boto3

    from sandbox.services import start_moto

    directory.mkdir(parents=True, exist_ok=True)
    port_file = directory / "restore-double.port"
    port_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    double = subprocess.Popen(
        [sys.executable, "-m", "bench.restore", "serve", str(port_file), str(directory / "ca")], cwd=REPO, env=env
    )
    try:
        with start_moto(log_dir=directory) as moto:
            deadline = time.monotonic() + 60
            while not port_file.exists():
                if time.monotonic() > deadline or double.poll() is not None:
                    raise RuntimeError("the gateway double did not start")
                time.sleep(0.1)
            bucket = f"bench-restore-{docs}"
            s3 = boto3.client(
                "s3",
                endpoint_url=moto.url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
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
            with open(directory / f"restore-client-{docs}.log", "wb") as log:
                process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log)
                assert process.stdout is not None
                out = process.stdout.read()
                _, status, usage = os.wait4(process.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"restore client failed: see {directory / f'restore-client-{docs}.log'}")
    finally:
        double.terminate()
        double.wait(timeout=30)
    result = json.loads(out.decode().strip().splitlines()[-1])
    if result["documents"] != docs or result["upserted"] != docs:
        raise RuntimeError(f"restored {result['documents']} documents ({result['upserted']} upserted), expected {docs}")
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "docs": docs,
        "seconds": result["seconds"],
        "docs_per_s": docs / result["seconds"],
        "cpu_seconds": cpu,
        "cpu_s_per_100k": cpu * 100_000 / docs,
        "peak_rss_mb": result["peak_rss_mb"],
        "request_charge": result["request_charge"],
        "load_1min_before": load,
        "command": f"python -m bench.restore --docs {docs}",
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def render(results: dict[int, dict]) -> str:
    lines = [
        SECTION,
        "",
        "`run_restore --exact` of N ~1 KB documents into an empty container of the gateway double (auth off,",
        "concurrency 8, batches of 500 with a progress checkpoint in moto S3 after each, Low priority, no RU",
        "budget), the state streamed from `sample_documents(N)`; CPU and peak RSS are the restore process's own.",
        "",
        "| documents | wall s | docs/s | CPU s / 100k docs | peak RSS MB | RU | load | command |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for docs, r in sorted(results.items()):
        lines.append(
            f"| {docs:,} | {r['seconds']:.1f} | {r['docs_per_s']:,.0f} | {r['cpu_s_per_100k']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['request_charge']:,.0f} | {r['load_1min_before']:.2f} | "
            f"`{r['command']}` ({r['at']}) |"
        )
    if 100_000 in results and 1_000_000 in results:
        small, big = results[100_000]["peak_rss_mb"], results[1_000_000]["peak_rss_mb"]
        lines += [
            "",
            f"Restore peak RSS at 1M vs 100k: {big:.0f} MB / {small:.0f} MB = **{big / small:.2f}x** "
            "(target <= 1.2x and < 300 MB).",
        ]
    else:
        lines += ["", "1M: not measured yet (`python -m bench.restore --docs 1000000`)."]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- restore benchmark: written by `python -m bench.restore` -->", "<!-- end of restore benchmark -->"


def write_doc(results: dict[int, dict]) -> None:
    """Replace (or append) the Restore section of docs/performance.md. It sits after the notes marker, which
    the export benchmark keeps verbatim, so either benchmark can run alone."""
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    section = f"{BEGIN}\n{render(results)}{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.write_text(text)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.restore", description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dir", type=Path, default=REPO / ".sandbox" / "bench-restore")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for docs in args.docs:
        result = measure(docs, args.dir.resolve())
        (RESULTS / f"restore-{docs}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"restore {docs}: {result['seconds']:.1f}s, {result['docs_per_s']:.0f} docs/s, CPU "
            f"{result['cpu_s_per_100k']:.1f}s/100k, peak RSS {result['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    results = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in RESULTS.glob("restore-*.json")}
    write_doc(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
