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
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import boto3
from azure.core.exceptions import ClientAuthenticationError
from azure.cosmos import exceptions as cosmos_exceptions
from pydantic import BaseModel, ConfigDict

from cosmos_export import audit, contract, identity, layout, metrics, source, storage, tables
from cosmos_export.commit import CommitStore, ContainerDefinition, LoadedState, Manifest, ManifestPart
from cosmos_export.contract import Env
from cosmos_export.schema import SchemaInfo, SchemaTracker, next_schema
from cosmos_export.settings import WorkerSettings
from cosmos_export.sink import FeedRangeSink
from cosmos_export.throughput import Throughput

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
    newest_ts: int | None = None  # the newest _ts committed so far (this run or before)
    #: EXPORT_MAX_RU_PER_SECOND during the run (None: no budget) and what the run spent per second on average.
    max_ru_per_second: float | None = None
    ru_per_second: float = 0.0
    #: Requests Cosmos answered 429 (retried by the SDK or by the worker), how often the worker lowered its
    #: concurrency because of them, and the lowest concurrency it ran at.
    throttled_requests: int = 0
    concurrency_lowered: int = 0
    lowest_concurrency: int = 0


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


s3_client = storage.client


def run_export(
    settings: WorkerSettings,
    mode: RunMode,
    *,
    credential: Any = None,
    session: boto3.Session | None = None,
    s3: Any = None,
    stop: threading.Event | None = None,
    log: Any = None,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> RunSummary:
    """Export every container in `settings`; raises ExportError (or ExportInterrupted) with the reason.

    Everything external can be injected for in-process tests: `credential` (Entra), `session` (AWS), `s3`.
    """
    check_mode(settings, mode)
    log = log or audit.get_logger()
    stop = stop or threading.Event()
    began = time.monotonic()
    client, s3 = connect(settings, mode, credential=credential, session=session, s3=s3, log=log, clock=clock)
    summary = RunSummary(mode=mode)
    for name in settings.cosmos_containers:
        with container_errors(settings, name, mode, log, clock):
            summary.containers.append(_export_container(settings, mode, client, s3, name, stop, log, clock))
    summary.seconds = time.monotonic() - began
    log.info(
        "export_done",
        mode=mode,
        containers=len(summary.containers),
        documents=summary.documents,
        bytes=summary.bytes,
        seconds=round(summary.seconds, 3),
        runs={c.container: c.run_id for c in summary.containers},
    )
    return summary


def check_mode(settings: WorkerSettings, mode: str) -> None:
    """Refuse a mode the run cannot honour, before anything is read or written."""
    if mode not in contract.RUN_MODES:
        raise ExportError(f"mode {mode!r} is not supported: use {' or '.join(contract.RUN_MODES)}")
    if mode == "incremental" and settings.query_filter:
        raise ExportError(
            f"{Env.QUERY_FILTER} is set but an incremental run reads the change feed, which cannot "
            f"apply a WHERE filter: unset {Env.QUERY_FILTER} or run --mode snapshot"
        )


_EXPLAINED = (
    identity.IdentityError,
    ClientAuthenticationError,
    cosmos_exceptions.CosmosHttpResponseError,
    source.SourceError,
)


def connect(
    settings: WorkerSettings,
    mode: str,
    *,
    credential: Any = None,
    session: boto3.Session | None = None,
    s3: Any = None,
    log: Any,
    clock: Callable[[], datetime],
) -> tuple[Any, Any]:
    """(Cosmos client, S3 client) after the identity chain and the consistency check (`export_start` logged)."""
    session = session or identity.aws_session(settings)
    s3 = s3 or s3_client(settings, session)
    try:
        with metrics.failure_recorded(log, settings, settings.cosmos_containers, mode, clock):
            credential = credential or identity.azure_credential(settings, session)
            client = source.cosmos_client(settings, credential)
            level = source.check_consistency(client, settings.min_consistency)
    except _EXPLAINED as e:
        raise explain(e, settings) from None
    log.info(
        "export_start",
        mode=mode,
        containers=list(settings.cosmos_containers),
        consistency=level,
        database=settings.cosmos_database,
        account=settings.account_name,
    )
    return client, s3


@contextmanager
def container_errors(
    settings: WorkerSettings, name: str, mode: str, log: Any, clock: Callable[[], datetime]
) -> Iterator[None]:
    """One container's work: a failure is recorded (metrics) and raised as the ExportError naming it."""
    try:
        with metrics.failure_recorded(log, settings, [name], mode, clock):
            yield
    except ExportError:
        raise
    except _EXPLAINED as e:
        raise explain(e, settings, name) from None
    except Exception as e:  # anything else keeps its traceback as the cause
        raise explain(e, settings, name) from e


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


# --- The plan: what each feed range reads (pure, tested without I/O) ----------


@dataclass(frozen=True)
class RangePlan:
    """What one feed range reads in this run."""

    index: int
    #: feed_range_key(feed_range): the checkpoint's key for this range's continuation.
    key: str
    feed_range: dict
    #: "change_feed" reads the feed from `continuation`; "query" runs the snapshot query.
    read: Literal["change_feed", "query"]
    #: Where the change feed resumes; None: from the beginning.
    continuation: str | None
    change_feed_mode: contract.ChangeFeedMode
    #: Take the feed's "now" before reading and save it as the range's continuation, so changes made while a
    #: query (or an AllVersionsAndDeletes snapshot, which cannot start from the beginning) runs are in the next run.
    end_at_now: bool


@dataclass(frozen=True)
class ContainerPlan:
    #: What runs: an incremental run of a container without a checkpoint is its first snapshot.
    mode: RunMode
    manifest_mode: contract.ManifestMode
    ranges: tuple[RangePlan, ...]
    #: Incremental was asked for, but there is no checkpoint to continue from.
    first_run: bool


def plan_container(
    mode: RunMode,
    continuations: Mapping[str, str | None] | None,
    feed_ranges: Callable[[], Iterable[dict]],
    *,
    snapshot_source: contract.SnapshotSource,
    change_feed_mode: contract.ChangeFeedMode,
) -> ContainerPlan:
    """Decide, per feed range, where to start, where to end and the manifest's mode.

    `continuations` are the checkpoint's (None: no checkpoint yet); `feed_ranges` lists the container's
    current feed ranges and is only called for a snapshot (an incremental run keeps the checkpoint's ranges).
    """
    if mode == "incremental" and continuations is not None:
        ranges = tuple(
            RangePlan(i, key, json.loads(key), "change_feed", cont, change_feed_mode, end_at_now=False)
            for i, (key, cont) in enumerate(sorted(continuations.items()))
        )
        return ContainerPlan("incremental", "incremental", ranges, first_run=False)
    query = snapshot_source == "query"
    all_versions = change_feed_mode == "AllVersionsAndDeletes"
    ranges = tuple(
        RangePlan(
            i,
            feed_range_key(fr),
            fr,
            "query" if query else "change_feed",
            None,
            # AllVersionsAndDeletes cannot start from the beginning: a snapshot reads the current versions.
            "LatestVersion" if all_versions else change_feed_mode,
            end_at_now=query or all_versions,
        )
        for i, fr in enumerate(feed_ranges())
    )
    return ContainerPlan("snapshot", "query-snapshot" if query else "snapshot", ranges, first_run=mode == "incremental")


# --- The steps ------------------------------------------------------------------


def explain(error: BaseException, settings: WorkerSettings, container: str | None = None) -> ExportError:
    """The one mapping from a failure to the ExportError an operator reads (naming the container, if any)."""
    where = f"{container}: " if container else ""
    if isinstance(error, ExportError):
        return error
    if isinstance(error, (identity.IdentityError, ClientAuthenticationError)):
        return ExportError(where + identity.explain_auth_error(error))
    if isinstance(error, cosmos_exceptions.CosmosHttpResponseError):
        return ExportError(where + source.explain_cosmos_error(error, settings))
    if isinstance(error, source.SourceError):
        return ExportError(where + str(error))
    return ExportError(f"{where}{type(error).__name__}: {error}")


@dataclass
class ContainerRun:
    """What every feed range of one container's run shares."""

    settings: WorkerSettings
    container: Any  # the SDK's ContainerProxy
    s3: Any
    target: layout.ExportTarget
    run_id: str
    started_at: datetime
    #: The whole run's schema (each range's sink merges its parts' schemas into it).
    schema: SchemaTracker
    previous_schema: SchemaInfo | None
    stop: threading.Event
    log: Any
    progress: audit.Progress
    #: The RU budget and the adaptive concurrency every range's reader shares.
    throughput: Throughput


class RangeResult(BaseModel):
    """What reading one feed range produced (a shard result carries these to `commit`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str
    #: Where the next run continues this range.
    continuation: str | None
    records: list[ManifestPart]
    request_charge: float
    newest_ts: int | None = None  # the newest _ts read


class ReadStats(BaseModel):
    """What reading spent and how it was held back; a fan-out's commit adds up its shards'."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    request_units: float = 0.0
    #: Wall time of the reading (shards read at the same time: the longest).
    read_seconds: float = 0.0
    budget_wait_seconds: float = 0.0
    throttled_requests: int = 0
    concurrency_lowered: int = 0
    lowest_concurrency: int = 0

    @classmethod
    def of(cls, throughput: Throughput, read_seconds: float) -> "ReadStats":
        return cls(
            # Every read's charge, also those that returned no page (the "now" continuation, the feed's final 304s).
            request_units=throughput.budget.consumed,
            read_seconds=read_seconds,
            budget_wait_seconds=throughput.budget.waited_seconds,
            throttled_requests=throughput.concurrency.throttled,
            concurrency_lowered=throughput.concurrency.lowered,
            lowest_concurrency=throughput.concurrency.lowest,
        )

    @classmethod
    def total(cls, shards: Iterable["ReadStats"]) -> "ReadStats":
        stats = list(shards)
        return cls(
            request_units=sum(s.request_units for s in stats),
            read_seconds=max((s.read_seconds for s in stats), default=0.0),
            budget_wait_seconds=sum(s.budget_wait_seconds for s in stats),
            throttled_requests=sum(s.throttled_requests for s in stats),
            concurrency_lowered=sum(s.concurrency_lowered for s in stats),
            lowest_concurrency=min((s.lowest_concurrency for s in stats), default=0),
        )

    def report(self, max_ru_per_second: float | None) -> dict[str, float | int | None]:
        """The log's figures (as Throughput.report)."""
        return {
            "max_ru_per_second": max_ru_per_second,
            "request_units": round(self.request_units, 2),
            "budget_wait_seconds": round(self.budget_wait_seconds, 3),
            "throttled_requests": self.throttled_requests,
            "concurrency_lowered": self.concurrency_lowered,
            "lowest_concurrency": self.lowest_concurrency,
        }

    @property
    def ru_per_second(self) -> float:
        return round(self.request_units / self.read_seconds, 2) if self.read_seconds > 0 else 0.0


def read_range(plan: RangePlan, run: ContainerRun) -> RangeResult:
    """Read one feed range as planned into its own sink; aborts its uploads on any failure or stop."""
    settings = run.settings
    sink = FeedRangeSink(
        run.s3,
        run.target,
        run_id=run.run_id,
        started_at=run.started_at,
        feed_range=plan.key,
        feed_range_index=plan.index,
        compression=settings.compression,
        part_size_bytes=settings.part_size_bytes,
        kms_key_arn=settings.kms_key_arn,
        schema=run.schema,
        log=run.log,
        previous_schema=run.previous_schema,
    )
    # raw: change-feed pages hand over each document's bytes (the sink writes canonical ones through).
    reader = source.FeedRangeReader(run.container, plan.feed_range, settings, run.stop, run.throughput, raw=True)
    charge = 0.0
    try:
        end: str | None = None
        if plan.end_at_now:
            # Take the feed's "now" first: changes made while the range is read are in the next run.
            end = reader.now_continuation()
            if end is None:
                raise ExportInterrupted("stop requested")
        if plan.read == "query":
            pages = reader.query(settings.query_filter)
        elif plan.continuation:
            pages = reader.change_feed(continuation=plan.continuation, mode=plan.change_feed_mode)
        else:
            # A reader of its own when "now" was taken: its continuation must not replace `end`.
            feed = (
                source.FeedRangeReader(run.container, plan.feed_range, settings, run.stop, run.throughput, raw=True)
                if end
                else reader
            )
            pages = feed.change_feed(start_time="Beginning", mode=plan.change_feed_mode)
        for page in pages:
            sink.write_page(page.docs)
            charge += page.request_charge
            run.log.info(
                "cosmos_page",
                feed_range_index=plan.index,
                activity_id=page.activity_id,
                request_charge=page.request_charge,
                items=len(page.docs),
            )
            run.progress.advance(len(page.docs))
        if run.stop.is_set():
            raise ExportInterrupted("stop requested")
        records = sink.close()
        return RangeResult(
            key=plan.key,
            continuation=end or reader.continuation,
            records=records,
            request_charge=charge,
            newest_ts=sink.newest_ts,
        )
    except BaseException:
        sink.abort()
        raise


def _read_all(
    ranges: tuple[RangePlan, ...], run: ContainerRun, concurrency: int, name: str, next_sequence: int
) -> list[RangeResult]:
    """Every range, `concurrency` at a time; the first failure stops the others at their next page."""
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"range-{name}") as pool:
        futures = [pool.submit(read_range, r, run) for r in ranges]
        wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.done() and f.exception() for f in futures):
            run.stop.set()  # let the other ranges stop at their next page
        wait(futures)
    errors = [e for f in futures if (e := f.exception()) is not None]
    if run.stop.is_set() or errors:
        real = [e for e in errors if not isinstance(e, ExportInterrupted)]
        if real:
            raise real[0]
        raise ExportInterrupted(
            f"{name}: stopped before commit (run {run.run_id}); nothing was committed, the next "
            f"run starts again from checkpoint sequence {next_sequence - 1}"
        )
    return [f.result() for f in futures]


# --- A container's run in three steps: begin, read, commit ---------------------------
#
# `run` does all three in one process; a fan-out (fanout.py) begins in `plan`, reads in each shard and
# commits in `commit`, with the same functions.


def target_of(settings: WorkerSettings, name: str) -> layout.ExportTarget:
    return layout.ExportTarget(
        bucket=settings.bucket,
        prefix=settings.prefix,
        account=settings.account_name or "",
        database=settings.cosmos_database,
        container=name,
    )


@dataclass(frozen=True)
class Begun:
    """A container's committed state and the plan made from it."""

    target: layout.ExportTarget
    store: CommitStore
    loaded: LoadedState
    container: Any  # the SDK's ContainerProxy
    definition: ContainerDefinition
    plan: ContainerPlan


def begin_container(settings: WorkerSettings, mode: RunMode, client: Any, s3: Any, name: str, log: Any) -> Begun:
    """Load the committed state (rolling the checkpoint forward) and plan every feed range's read."""
    target = target_of(settings, name)
    store = CommitStore(s3, target, log)
    loaded = store.load()
    container, properties = source.container_and_properties(client, settings.cosmos_database, name)
    checkpoint = loaded.checkpoint
    plan = plan_container(
        mode,
        checkpoint.continuations if checkpoint else None,
        lambda: source.feed_ranges(container),
        snapshot_source=settings.snapshot_source,
        change_feed_mode=settings.change_feed_mode,
    )
    if plan.first_run:
        log.warning("no_checkpoint_running_snapshot", reason="first run for this container: nothing to continue from")
    return Begun(target, store, loaded, container, ContainerDefinition.of(properties), plan)


@dataclass(frozen=True)
class Read:
    results: list[RangeResult]
    #: The schema's (path -> types) the ranges' documents showed (schema.next_schema takes it).
    fields: dict[str, list[str]]
    stats: ReadStats


def read_ranges(
    settings: WorkerSettings,
    ranges: tuple[RangePlan, ...],
    *,
    container: Any,
    s3: Any,
    target: layout.ExportTarget,
    run_id: str,
    started_at: datetime,
    previous: SchemaInfo | None,
    next_sequence: int,
    stop: threading.Event,
    log: Any,
    label: str,
    total: int | None = None,
) -> Read:
    """Read `ranges` (all of a container's, or a shard's) into their parts; nothing is committed here."""
    tracker = SchemaTracker()
    throughput = Throughput.of(settings.max_ru_per_second, settings.concurrency, log)
    began = time.monotonic()
    with bulk_gc(), audit.Progress(label, total=total) as progress:
        run = ContainerRun(
            settings, container, s3, target, run_id, started_at, tracker, previous, stop, log, progress, throughput
        )
        results = _read_all(ranges, run, settings.concurrency, target.container, next_sequence)
    return Read(results, tracker.fields(), ReadStats.of(throughput, time.monotonic() - began))


def merged_fields(each: Iterable[dict[str, list[str]]]) -> dict[str, list[str]]:
    """The union of several reads' schema fields (a fan-out's shards)."""
    out: dict[str, set[str]] = {}
    for fields in each:
        for path, types in fields.items():
            out.setdefault(path, set()).update(types)
    return {path: sorted(types) for path, types in sorted(out.items())}


def commit_container(
    settings: WorkerSettings,
    s3: Any,
    store: CommitStore,
    loaded: LoadedState,
    *,
    manifest_mode: contract.ManifestMode,
    feed_ranges: int,
    run_id: str,
    started_at: datetime,
    read: Read,
    definition: ContainerDefinition,
    began: float,
    log: Any,
    clock: Callable[[], datetime],
) -> ContainerResult:
    """Write the manifest and move the checkpoint (conditional writes), then clean up and report."""
    target = store.target
    name = target.container
    checkpoint = loaded.checkpoint
    previous = checkpoint.schema_ if checkpoint else None
    results = read.results
    records = [r for result in results for r in result.records]
    schema = next_schema(previous, read.fields)
    manifest = Manifest(
        run_id=run_id,
        mode=manifest_mode,
        account=target.account,
        database=target.database,
        container=name,
        started_at=started_at,
        finished_at=clock(),
        parts=records,
        continuations={r.key: r.continuation for r in results},
        schema_previous=previous,
        schema_=schema,
        timings={"seconds": round(time.monotonic() - began, 3)},
        newest_ts=max(
            [r.newest_ts for r in results if r.newest_ts is not None]
            + ([checkpoint.newest_ts] if checkpoint and checkpoint.newest_ts else []),
            default=None,
        ),
        container_definition=definition,
        change_feed_mode=settings.change_feed_mode,
        query_filter=settings.query_filter if manifest_mode == "query-snapshot" else None,
    )
    committed = store.commit(loaded, manifest)
    deleted = store.cleanup_orphans({run_id})
    if settings.current_state:  # analytics tables (tables.py); never fails the committed run
        tables.after_commit(s3, target, settings.kms_key_arn, log)
    stats = read.stats
    result = ContainerResult(
        container=name,
        run_id=run_id,
        mode=manifest_mode,
        sequence=committed.sequence,
        documents=manifest.documents,
        bytes=manifest.bytes,
        parts=len(records),
        feed_ranges=feed_ranges,
        request_charge=round(stats.request_units, 2),
        seconds=round(time.monotonic() - began, 3),
        newest_ts=manifest.newest_ts,
        max_ru_per_second=settings.max_ru_per_second,
        ru_per_second=stats.ru_per_second,
        throttled_requests=stats.throttled_requests,
        concurrency_lowered=stats.concurrency_lowered,
        lowest_concurrency=stats.lowest_concurrency,
    )
    at = clock()
    metrics.emit(
        log,
        settings,
        name,
        manifest_mode,
        at,
        metrics.committed_values(
            documents=result.documents,
            bytes=result.bytes,
            parts=result.parts,
            request_units=result.request_charge,
            seconds=result.seconds,
            newest=result.newest_ts,
            at=at,
            request_units_per_second=result.ru_per_second,
            throttled_requests=result.throttled_requests,
        ),
    )
    log.info(
        "container_committed",
        run_id=run_id,
        sequence=committed.sequence,
        documents=result.documents,
        bytes=result.bytes,
        parts=result.parts,
        request_charge=result.request_charge,
        orphans_deleted=len(deleted),
        schema_version=schema.version,
        **stats.report(settings.max_ru_per_second),
        ru_per_second=result.ru_per_second,
    )
    return result


def _export_container(
    settings: WorkerSettings,
    mode: RunMode,
    client: Any,
    s3: Any,
    name: str,
    stop: threading.Event,
    log: Any,
    clock: Callable[[], datetime],
) -> ContainerResult:
    """The single-task path: begin, read every range, commit."""
    began = time.monotonic()
    log = log.bind(container=name)
    begun = begin_container(settings, mode, client, s3, name, log)
    plan, loaded = begun.plan, begun.loaded
    started_at = clock()
    run_id = layout.new_run_id(started_at)
    log.info(
        "container_start",
        run_id=run_id,
        mode=plan.manifest_mode,
        feed_ranges=len(plan.ranges),
        sequence=loaded.next_sequence,
    )
    # A snapshot's size is known up front (the container's document count): the bar's total, hence its ETA.
    total = (
        source.document_count(begun.container)
        if (plan.mode == "snapshot" and not settings.query_filter and audit.progress_wanted())
        else None
    )
    read = read_ranges(
        settings,
        plan.ranges,
        container=begun.container,
        s3=s3,
        target=begun.target,
        run_id=run_id,
        started_at=started_at,
        previous=loaded.checkpoint.schema_ if loaded.checkpoint else None,
        next_sequence=loaded.next_sequence,
        stop=stop,
        log=log,
        label=f"{name} ({plan.manifest_mode})",
        total=total,
    )
    return commit_container(
        settings,
        s3,
        begun.store,
        loaded,
        manifest_mode=plan.manifest_mode,
        feed_ranges=len(plan.ranges),
        run_id=run_id,
        started_at=started_at,
        read=read,
        definition=begun.definition,
        began=began,
        log=log,
        clock=clock,
    )
