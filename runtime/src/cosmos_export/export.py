"""One export run: every configured container, its feed ranges in parallel, committed by manifest.

Per container: load the committed state, read each feed range (snapshot: from
the beginning; incremental: from the checkpoint's continuations) into its own
FeedRangeSink, then commit (manifest, then checkpoint, both conditional) and
delete orphaned parts of earlier crashed runs. A stop request (SIGTERM) or any
failure aborts the open uploads and commits nothing: the next run redoes the
work from the last checkpoint.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import boto3
from azure.core.exceptions import ClientAuthenticationError
from azure.cosmos import exceptions as cosmos_exceptions

from cosmos_export import audit, contract, identity, layout, source
from cosmos_export.commit import CommitStore, ContainerDefinition, LoadedState, Manifest, ManifestPart, SchemaModel
from cosmos_export.contract import Env
from cosmos_export.schema import SchemaTracker, next_schema
from cosmos_export.settings import WorkerSettings
from cosmos_export.sink import FeedRangeSink, PartRecord, s3_client_config

RunMode = contract.RunMode


class ExportError(Exception):
    """The run failed and committed nothing for the container named in the message."""


class ExportInterrupted(ExportError):
    """Stopped on request (SIGTERM) before committing."""


@dataclass
class ContainerResult:
    container: str
    run_id: str
    mode: str
    sequence: int
    documents: int
    bytes: int
    parts: int
    feed_ranges: int
    request_charge: float
    seconds: float


@dataclass
class RunSummary:
    mode: RunMode
    containers: list[ContainerResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def documents(self) -> int:
        return sum(c.documents for c in self.containers)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.containers)


def feed_range_key(feed_range: dict) -> str:
    """Stable JSON of a feed range: the checkpoint's key for its continuation."""
    return json.dumps(feed_range, sort_keys=True, separators=(",", ":"))


def s3_client(settings: WorkerSettings, session: boto3.Session) -> Any:
    return session.client("s3", region_name=settings.aws_region, endpoint_url=settings.s3_endpoint,
                          config=s3_client_config())


def run_export(settings: WorkerSettings, mode: RunMode, *, credential: Any = None, session: boto3.Session | None = None,
               s3: Any = None, stop: threading.Event | None = None, log: Any = None,
               clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> RunSummary:
    """Export every container in `settings`; raises ExportError (or ExportInterrupted) with the reason.

    Everything external can be injected for in-process tests: `credential` (Entra), `session` (AWS), `s3`.
    """
    if mode not in contract.RUN_MODES:
        raise ExportError(f"mode {mode!r} is not supported: use {' or '.join(contract.RUN_MODES)}")
    if mode == "incremental" and settings.query_filter:
        raise ExportError(f"{Env.QUERY_FILTER} is set but an incremental run reads the change feed, which cannot "
                          f"apply a WHERE filter: unset {Env.QUERY_FILTER} or run --mode snapshot")
    log = log or audit.get_logger()
    stop = stop or threading.Event()
    began = time.monotonic()
    session = session or identity.aws_session(settings)
    s3 = s3 or s3_client(settings, session)
    try:
        credential = credential or identity.azure_credential(settings, session)
        client = source.cosmos_client(settings, credential)
        level = source.check_consistency(client, settings.min_consistency)
    except (identity.IdentityError, ClientAuthenticationError) as e:
        raise ExportError(identity.explain_auth_error(e)) from None
    except cosmos_exceptions.CosmosHttpResponseError as e:
        raise ExportError(source.explain_cosmos_error(e, settings)) from None
    except source.SourceError as e:
        raise ExportError(str(e)) from None
    log.info("export_start", mode=mode, containers=list(settings.cosmos_containers), consistency=level,
             database=settings.cosmos_database, account=settings.account_name)
    summary = RunSummary(mode=mode)
    for name in settings.cosmos_containers:
        try:
            summary.containers.append(_export_container(settings, mode, client, s3, name, stop, log, clock))
        except ExportError:
            raise
        except cosmos_exceptions.CosmosHttpResponseError as e:
            raise ExportError(f"{name}: {source.explain_cosmos_error(e, settings)}") from None
        except (identity.IdentityError, ClientAuthenticationError) as e:
            raise ExportError(f"{name}: {identity.explain_auth_error(e)}") from None
        except Exception as e:
            raise ExportError(f"{name}: {type(e).__name__}: {e}") from e
    summary.seconds = time.monotonic() - began
    log.info("export_done", mode=mode, containers=len(summary.containers), documents=summary.documents,
             bytes=summary.bytes, seconds=round(summary.seconds, 3),
             runs={c.container: c.run_id for c in summary.containers})
    return summary


#: Young-generation threshold while pages stream (CPython's default is 700 allocations).
BULK_GC_THRESHOLD = 50_000


@contextmanager
def bulk_gc() -> Iterator[None]:
    """Less cyclic garbage collection while pages stream through.

    Documents are acyclic and freed by reference counting, but every page allocates thousands of
    dicts, so the collector kept re-scanning live pages and the loaded libraries: measured 3.1 of
    ~10 CPU s per 100k documents (bench, `gc.callbacks`). Freezing what exists at the start and
    collecting the young generation less often keeps that near 0.1 s; thresholds are restored after.
    """
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(previous[0], BULK_GC_THRESHOLD), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


@dataclass
class _RangeWork:
    index: int
    key: str
    feed_range: dict
    continuation: str | None


def _export_container(settings: WorkerSettings, mode: RunMode, client: Any, s3: Any, name: str,
                      stop: threading.Event, log: Any, clock: Callable[[], datetime]) -> ContainerResult:
    began = time.monotonic()
    target = layout.ExportTarget(bucket=settings.bucket, prefix=settings.prefix, account=settings.account_name or "",
                                 database=settings.cosmos_database, container=name)
    log = log.bind(container=name)
    store = CommitStore(s3, target, log)
    loaded: LoadedState = store.load()
    container, properties = source.container_and_properties(client, settings.cosmos_database, name)
    definition = ContainerDefinition.of(properties)
    checkpoint = loaded.checkpoint
    effective = mode
    if mode == "incremental" and checkpoint is None:
        log.warning("no_checkpoint_running_snapshot", reason="first run for this container: nothing to continue from")
        effective = "snapshot"
    if effective == "incremental":
        assert checkpoint is not None  # incremental only with a checkpoint (above)
        work = [_RangeWork(i, key, json.loads(key), cont)
                for i, (key, cont) in enumerate(sorted(checkpoint.continuations.items()))]
        manifest_mode = "incremental"
    else:
        work = [_RangeWork(i, feed_range_key(fr), fr, None) for i, fr in enumerate(source.feed_ranges(container))]
        manifest_mode = "query-snapshot" if settings.snapshot_source == "query" else "snapshot"
    started_at = clock()
    run_id = layout.new_run_id(started_at)
    previous = checkpoint.schema_.info() if checkpoint else None
    tracker = SchemaTracker()
    charges: dict[int, float] = {}
    log.info("container_start", run_id=run_id, mode=manifest_mode, feed_ranges=len(work),
             sequence=loaded.next_sequence)

    def read_range(w: _RangeWork) -> tuple[str, str | None, list[PartRecord]]:
        sink = FeedRangeSink(s3, target, run_id=run_id, started_at=started_at, feed_range=w.key,
                             feed_range_index=w.index, compression=settings.compression,
                             part_size_bytes=settings.part_size_bytes, kms_key_arn=settings.kms_key_arn,
                             schema=tracker, log=log, previous_schema=previous)
        reader = source.FeedRangeReader(container, w.feed_range, settings, stop)
        try:
            end: str | None = None
            if effective == "incremental":
                pages = reader.change_feed(continuation=w.continuation) if w.continuation else \
                    reader.change_feed(start_time="Beginning")
            elif settings.snapshot_source == "query" or settings.change_feed_mode == "AllVersionsAndDeletes":
                # Take the feed's "now" first: changes made while the snapshot is read are in the next run.
                end = reader.now_continuation()
                if end is None:
                    raise ExportInterrupted("stop requested")
                if settings.snapshot_source == "query":
                    pages = reader.query(settings.query_filter)
                else:  # AllVersionsAndDeletes cannot start from Beginning: read current versions instead
                    pages = source.FeedRangeReader(container, w.feed_range, settings, stop).change_feed(
                        start_time="Beginning", mode="LatestVersion")
            else:
                pages = reader.change_feed(start_time="Beginning")
            for page in pages:
                sink.write_page(page.docs)
                charges[w.index] = charges.get(w.index, 0.0) + page.request_charge
                log.info("cosmos_page", feed_range_index=w.index, activity_id=page.activity_id,
                         request_charge=page.request_charge, items=len(page.docs))
                progress.advance(len(page.docs))
            if stop.is_set():
                raise ExportInterrupted("stop requested")
            records = sink.close()
            return w.key, end or reader.continuation, records
        except BaseException:
            sink.abort()
            raise

    results: list[tuple[str, str | None, list[PartRecord]]] = []
    # A snapshot's size is known up front (the container's document count): the bar's total, hence its ETA.
    total = source.document_count(container) if (
        effective == "snapshot" and not settings.query_filter and audit.progress_wanted()) else None
    with bulk_gc(), audit.Progress(f"{name} ({manifest_mode})", total=total) as progress, \
            ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix=f"range-{name}") as pool:
        futures = [pool.submit(read_range, w) for w in work]
        wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.done() and f.exception() for f in futures):
            stop.set()  # let the other ranges stop at their next page
        wait(futures)
    errors = [e for f in futures if (e := f.exception()) is not None]
    if stop.is_set() or errors:
        real = [e for e in errors if not isinstance(e, ExportInterrupted)]
        if real:
            raise real[0]
        raise ExportInterrupted(f"{name}: stopped before commit (run {run_id}); nothing was committed, the next run "
                                f"starts again from checkpoint sequence {loaded.next_sequence - 1}")
    results = [f.result() for f in futures]
    records = [r for _, _, rs in results for r in rs]
    schema = next_schema(previous, tracker)
    manifest = Manifest(run_id=run_id, mode=manifest_mode, account=target.account, database=target.database,
                        container=name, started_at=started_at, finished_at=clock(),
                        parts=[ManifestPart.of(r) for r in records],
                        continuations={key: cont for key, cont, _ in results},
                        schema_previous=SchemaModel.of(previous) if previous else None, schema_=SchemaModel.of(schema),
                        timings={"seconds": round(time.monotonic() - began, 3)},
                        container_definition=definition, change_feed_mode=settings.change_feed_mode,
                        query_filter=settings.query_filter if manifest_mode == "query-snapshot" else None)
    committed = store.commit(loaded, manifest)
    deleted = store.cleanup_orphans({run_id})
    result = ContainerResult(container=name, run_id=run_id, mode=manifest_mode, sequence=committed.sequence,
                             documents=manifest.documents, bytes=manifest.bytes, parts=len(records),
                             feed_ranges=len(work), request_charge=round(sum(charges.values()), 2),
                             seconds=round(time.monotonic() - began, 3))
    log.info("container_committed", run_id=run_id, sequence=committed.sequence, documents=result.documents,
             bytes=result.bytes, parts=result.parts, request_charge=result.request_charge,
             orphans_deleted=len(deleted), schema_version=schema.version)
    return result

