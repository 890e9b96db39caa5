"""One benchmark client, run in its own process so its CPU time and peak RSS are its own.

    python -m bench.client floor|floor_tuned|worker|naive --state <sandbox.json> --container <name> [--profile <file>]

Prints one JSON line: {"client", "documents", "seconds"} (wall time of the measured work only).
The parent reads CPU seconds and peak RSS from the child's rusage (os.wait4).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def _settings(state: dict, container: str):
    from cosmos_export.contract import Env
    from cosmos_export.settings import load_settings

    os.environ.update(state["worker_env"])
    os.environ[Env.COSMOS_CONTAINERS] = container
    # The export only: the analytics tables' refresh after the commit has its own benchmark (bench/tables.py).
    os.environ[Env.CURRENT_STATE] = "false"
    if CONCURRENCY:
        os.environ[Env.CONCURRENCY] = str(CONCURRENCY)

    return load_settings()


def _cosmos_container(settings, state: dict, container: str):
    """The same client the worker builds: Entra token through STS, TLS verified against the sandbox CA."""
    from azure.cosmos import CosmosClient, documents

    from cosmos_export import identity

    client = CosmosClient(
        state["endpoints"]["cosmos"],
        credential=identity.azure_credential(settings),
        connection_verify=state["ca_bundle"],
        ssl_config=documents.SSLConfiguration(),
    )
    return client.get_database_client(settings.cosmos_database).get_container_client(container)


def floor(state: dict, container: str) -> int:
    """Drain every feed range's change feed from the beginning, discarding the documents."""
    settings = _settings(state, container)
    target = _cosmos_container(settings, state, container)
    ranges = list(target.read_feed_ranges())

    def drain(feed_range) -> int:
        n = 0
        for page in target.query_items_change_feed(
            feed_range=feed_range, start_time="Beginning", max_item_count=settings.page_size
        ).by_page():
            n += sum(1 for _ in page)
        return n

    with ThreadPoolExecutor(settings.concurrency) as pool:
        return sum(pool.map(drain, ranges))


def floor_tuned(state: dict, container: str) -> int:
    """The floor read the way the worker reads: its GC setting and its SDK response parser (sdk_json)."""
    from cosmos_export import sdk_json
    from cosmos_export.export import bulk_gc

    sdk_json.install()
    with bulk_gc():
        return floor(state, container)


def worker(state: dict, container: str) -> int:
    """The worker's own snapshot export (run_export, what `cosmos-export run --mode snapshot` calls)."""
    from cosmos_export.export import run_export

    return run_export(_settings(state, container), "snapshot").documents


def naive(state: dict, container: str) -> int:
    """What a user might write: read_all_items, json.dumps per document, one buffered put_object."""
    import boto3

    settings = _settings(state, container)
    target = _cosmos_container(settings, state, container)
    items = target.read_all_items(max_item_count=settings.page_size)
    lines = [json.dumps(doc) for doc in items]
    body = ("\n".join(lines) + "\n").encode()
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint, region_name=settings.aws_region)
    # Under the export prefix: the task role may write nowhere else (moto enforces its policy).
    s3.put_object(Bucket=settings.bucket, Key=f"{settings.prefix}/naive/{container}.jsonl", Body=body)
    return len(lines)


#: --concurrency: EXPORT_CONCURRENCY for this client (the sweep); None: the stack's.
CONCURRENCY: int | None = None

CLIENTS = {"floor": floor, "floor_tuned": floor_tuned, "worker": worker, "naive": naive}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--state", required=True)
    parser.add_argument("--container", required=True)
    parser.add_argument("--profile", help="write a pyinstrument text profile here")
    parser.add_argument("--concurrency", type=int, help="EXPORT_CONCURRENCY instead of the stack's")
    args = parser.parse_args()
    global CONCURRENCY
    CONCURRENCY = args.concurrency
    with open(args.state) as f:
        state = json.load(f)
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    started = time.perf_counter()
    documents = CLIENTS[args.client](state, args.container)
    seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.stop()
        with open(args.profile, "w") as f:
            f.write(profiler.output_text(unicode=True, color=False, show_all=False))
    # Peak RSS of this program only: VmHWM starts afresh at exec, whereas the parent's ru_maxrss
    # would also count the forked copy of the (larger) benchmark driver before exec.
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(
        json.dumps({"client": args.client, "documents": documents, "seconds": seconds, "peak_rss_mb": hwm_kb / 1024}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
