"""Fan-out over feed ranges (issue 15): one run as a plan, N shards and a commit, each its own process.

    cosmos-export plan --mode M --shards N --execution NAME   (contract.fan_out_plan_command)
    cosmos-export run --run ID --shard K/N                    (contract.fan_out_shard_command)
    cosmos-export commit --run ID                             (contract.fan_out_commit_command)

`plan` begins every configured container's run exactly as `run` would (export.begin_container: the
checkpoint rolled forward, the feed ranges to read), gives the ranges to at most N shards and stores that
under the container's prefix, outside `data/` (`fan-out/run=<ID>/plan.json`), then writes the plan document
the state machine reads (contract.fan_out_plan_key). A shard reads only its ranges with the plan's run id and
start time (export.read_ranges), so a retried shard writes the same part keys again, and stores what it read
(`shard-KKKK.json`: each range's parts with their version ids, continuations, schema fields, read stats). It
never commits. `commit` needs S3 only: it checks that every shard's result is there, covers exactly that
shard's ranges and that every part it lists is in the bucket as recorded (size, sha256 / document-count /
schema tags of that version), refusing before any write otherwise; then it commits one manifest and the
checkpoint per container with the same conditional writes as `run` (export.commit_container) and deletes the
run's parts the manifest does not list (an earlier, killed attempt's). A commit of a run that is already
committed exits 0; a checkpoint that moved since the plan is refused (another run committed first).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Callable

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, ValidationError

from cosmos_export import audit, contract, identity, layout, source, storage
from cosmos_export.commit import CommitStore, ContainerDefinition, LoadedState
from cosmos_export.contract import Meta
from cosmos_export.export import (
    ContainerResult,
    ExportError,
    RangePlan,
    RangeResult,
    Read,
    ReadStats,
    begin_container,
    check_mode,
    commit_container,
    connect,
    container_errors,
    merged_fields,
    read_ranges,
    s3_client,
    target_of,
)
from cosmos_export.schema import SchemaInfo
from cosmos_export.settings import WorkerSettings

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
PLAN_FORMAT = 1


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' (contract.FAN_OUT_SHARD_FORMAT) -> (K, N), 1 <= K <= N; a ValueError naming the value and the fix."""
    match = _SHARD.match(text)
    if not match:
        example = contract.FAN_OUT_SHARD_FORMAT.format(shard=2, shards=4)
        raise ValueError(f"--shard {text!r} is not a shard: use K/N with whole numbers, e.g. {example}")
    shard, shards = int(match.group(1)), int(match.group(2))
    if not 1 <= shard <= shards:
        raise ValueError(f"--shard {text!r}: K must be between 1 and N ({shards}); shards are numbered 1..N")
    return shard, shards


def assign_shards(ranges: tuple[RangePlan, ...], shards: int) -> dict[int, tuple[RangePlan, ...]]:
    """At most `shards` shards of similar size: range i goes to shard (i mod S) + 1, S = min(shards, ranges).

    Range counts per shard differ by at most one. Under hash partitioning the feed ranges hold similar
    amounts of data, and a per-range document count is not cheap to get, so counts are what is balanced.
    """
    if shards < 1:
        raise ValueError(f"shards={shards} must be at least 1")
    used = min(shards, len(ranges))
    return {k: tuple(r for i, r in enumerate(ranges) if i % used == k - 1) for k in range(1, used + 1)}


# --- What is stored between the three commands -----------------------------------


class PlannedRange(BaseModel):
    """A RangePlan and the shard that reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shard: int
    index: int
    key: str
    feed_range: dict
    read: str
    continuation: str | None
    change_feed_mode: str
    end_at_now: bool

    def range_plan(self) -> RangePlan:
        return RangePlan(**self.model_dump(exclude={"shard"}))


class ContainerFanOut(BaseModel):
    """One container's part of a fan-out run, as `plan` decided it (`fan-out/run=<ID>/plan.json`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format_version: int = PLAN_FORMAT
    run_id: str
    execution: str
    container: str
    started_at: datetime
    requested_mode: contract.RunMode
    manifest_mode: contract.ManifestMode
    shards: int
    #: The sequence this run commits, and the checkpoint it continues (None: the first run).
    next_sequence: int
    checkpoint_run_id: str | None
    previous_schema: SchemaInfo | None
    definition: ContainerDefinition
    ranges: list[PlannedRange]

    def ranges_of(self, shard: int) -> tuple[RangePlan, ...]:
        return tuple(r.range_plan() for r in self.ranges if r.shard == shard)

    @property
    def used_shards(self) -> list[int]:
        return sorted({r.shard for r in self.ranges})


class ShardResult(BaseModel):
    """What one shard read for one container (`fan-out/run=<ID>/shard-KKKK.json`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format_version: int = PLAN_FORMAT
    run_id: str
    container: str
    shard: int
    shards: int
    results: list[RangeResult]
    fields: dict[str, list[str]]
    stats: ReadStats
    finished_at: datetime


def run_prefix(target: layout.ExportTarget, run_id: str) -> str:
    return f"{target.container_prefix}/fan-out/run={run_id}/"


def plan_key(target: layout.ExportTarget, run_id: str) -> str:
    return run_prefix(target, run_id) + "plan.json"


def shard_key(target: layout.ExportTarget, run_id: str, shard: int) -> str:
    return run_prefix(target, run_id) + f"shard-{shard:04d}.json"


def _put_json(bucket: storage.Bucket, key: str, model: BaseModel | dict, kms_key_arn: str | None) -> None:
    body = model.model_dump_json(indent=2) if isinstance(model, BaseModel) else json.dumps(model, indent=2)
    bucket.put(key, body.encode(), content_type="application/json", kms_key_arn=kms_key_arn)


def _load_plan(bucket: storage.Bucket, target: layout.ExportTarget, run_id: str) -> ContainerFanOut:
    key = plan_key(target, run_id)
    found = bucket.get(key)
    if found is None:
        raise ExportError(
            f"{target.container}: run {run_id} has no fan-out plan at {bucket.url(key)}: pass the run_id that "
            f"`cosmos-export plan` wrote (its plan document), or plan the run again"
        )
    try:
        return ContainerFanOut.model_validate_json(found[0])
    except ValidationError as e:
        raise ExportError(
            f"{target.container}: the fan-out plan {bucket.url(key)} is not valid ({e.errors()[0]['msg']})"
        ) from None


def _check_run_id(run_id: str) -> None:
    if not layout.RUN_ID_PATTERN.match(run_id):
        raise ValueError(f"--run {run_id!r} is not a run id: use the run_id of the plan document `plan` wrote")


# --- The three commands -------------------------------------------------------------


def plan_fan_out(
    settings: WorkerSettings,
    mode: contract.RunMode,
    shards: int,
    execution: str,
    *,
    credential: Any = None,
    session: Any = None,
    s3: Any = None,
    log: Any = None,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> dict:
    """Plan one run of every configured container over at most `shards` shards; returns the plan document."""
    check_mode(settings, mode)
    if not 1 <= shards <= contract.FAN_OUT_MAX_SHARDS:
        raise ValueError(f"--shards {shards}: use 1..{contract.FAN_OUT_MAX_SHARDS} (the stack's fanOut.maxShards)")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,80}", execution):
        raise ValueError(
            f"--execution {execution!r}: use the Step Functions execution name (1-80 letters, digits, '.', '-' or '_')"
        )
    log = log or audit.get_logger()
    client, s3 = connect(settings, mode, credential=credential, session=session, s3=s3, log=log, clock=clock)
    bucket = storage.Bucket(s3, settings.bucket)
    started_at = clock()
    run_id = layout.new_run_id(started_at)
    used: set[int] = set()
    for name in settings.cosmos_containers:
        with container_errors(settings, name, mode, log, clock):
            begun = begin_container(settings, mode, client, s3, name, log.bind(container=name))
            checkpoint = begun.loaded.checkpoint
            assigned = assign_shards(begun.plan.ranges, shards)
            planned = ContainerFanOut(
                run_id=run_id,
                execution=execution,
                container=name,
                started_at=started_at,
                requested_mode=mode,
                manifest_mode=begun.plan.manifest_mode,
                shards=shards,
                next_sequence=begun.loaded.next_sequence,
                checkpoint_run_id=checkpoint.run_id if checkpoint else None,
                previous_schema=checkpoint.schema_ if checkpoint else None,
                definition=begun.definition,
                ranges=[PlannedRange(shard=k, **asdict(r)) for k, rs in assigned.items() for r in rs],
            )
            _put_json(bucket, plan_key(begun.target, run_id), planned, settings.kms_key_arn)
            used.update(planned.used_shards)
    document = {"run_id": run_id, "shards": sorted(used)}
    _put_json(bucket, contract.fan_out_plan_key(settings.prefix, execution), document, settings.kms_key_arn)
    log.info("fan_out_planned", run_id=run_id, execution=execution, shards=sorted(used), mode=mode)
    return document


def run_shard(
    settings: WorkerSettings,
    run_id: str,
    shard_spec: str,
    *,
    credential: Any = None,
    session: Any = None,
    s3: Any = None,
    stop: threading.Event | None = None,
    log: Any = None,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> list[ShardResult]:
    """Read shard K's ranges of every container's planned run into parts and a shard result; never commits."""
    _check_run_id(run_id)
    shard, shards = parse_shard(shard_spec)
    log = log or audit.get_logger()
    stop = stop or threading.Event()
    session = session or identity.aws_session(settings)
    s3 = s3 or s3_client(settings, session)
    bucket = storage.Bucket(s3, settings.bucket)
    plans = [_load_plan(bucket, target_of(settings, name), run_id) for name in settings.cosmos_containers]
    for planned in plans:
        if planned.shards != shards:
            raise ValueError(
                f"--shard {shard_spec!r}: run {run_id} was planned over {planned.shards} shards: use "
                f"--shard {contract.FAN_OUT_SHARD_FORMAT.format(shard=shard, shards=planned.shards)}"
            )
    mode = plans[0].requested_mode
    client, s3 = connect(settings, mode, credential=credential, session=session, s3=s3, log=log, clock=clock)
    out = []
    for planned in plans:
        ranges = planned.ranges_of(shard)
        if not ranges:
            continue  # this container has fewer ranges than shards
        name = planned.container
        with container_errors(settings, name, mode, log, clock):
            target = target_of(settings, name)
            container, _ = source.container_and_properties(client, settings.cosmos_database, name)
            read = read_ranges(
                settings,
                ranges,
                container=container,
                s3=s3,
                target=target,
                run_id=run_id,
                started_at=planned.started_at,
                previous=planned.previous_schema,
                next_sequence=planned.next_sequence,
                stop=stop,
                log=log.bind(container=name, shard=shard),
                label=f"{name} shard {shard}/{shards}",
            )
            result = ShardResult(
                run_id=run_id,
                container=name,
                shard=shard,
                shards=shards,
                results=read.results,
                fields=read.fields,
                stats=read.stats,
                finished_at=clock(),
            )
            _put_json(bucket, shard_key(target, run_id, shard), result, settings.kms_key_arn)
            log.info(
                "shard_read",
                container=name,
                run_id=run_id,
                shard=shard,
                shards=shards,
                feed_ranges=len(ranges),
                parts=sum(len(r.records) for r in read.results),
                documents=sum(p.documents for r in read.results for p in r.records),
            )
            out.append(result)
    return out


def _shard_problems(bucket: storage.Bucket, planned: ContainerFanOut, shard: int, target: Any) -> list[str]:
    """Why shard `shard`'s result cannot be committed (empty: it can)."""
    key = shard_key(target, planned.run_id, shard)
    found = bucket.get(key)
    if found is None:
        return [f"shard {shard} has no result ({bucket.url(key)})"]
    try:
        result = ShardResult.model_validate_json(found[0])
    except ValidationError as e:
        return [f"shard {shard}'s result {bucket.url(key)} is not valid ({e.errors()[0]['msg']})"]
    expected = {r.key for r in planned.ranges_of(shard)}
    got = [r.key for r in result.results]
    if result.run_id != planned.run_id or sorted(got) != sorted(expected) or len(set(got)) != len(got):
        return [f"shard {shard}'s result covers other feed ranges than its plan"]
    problems = []
    for part in (p for r in result.results for p in r.records):
        try:
            size = bucket.size(part.key, part.version_id)
            tags = bucket.tags(part.key, part.version_id)
        except ClientError as e:
            problems.append(f"shard {shard}'s part {bucket.url(part.key)} is missing ({storage.error_code(e)})")
            continue
        recorded = {Meta.DOCUMENT_COUNT: str(part.documents), Meta.SHA256: part.sha256}
        if size != part.bytes or any(tags.get(k) != v for k, v in recorded.items()):
            problems.append(f"shard {shard}'s part {bucket.url(part.key)} differs from what the shard recorded")
    return problems


def _results(bucket: storage.Bucket, planned: ContainerFanOut, target: Any) -> list[ShardResult]:
    found = [bucket.get(shard_key(target, planned.run_id, k)) for k in planned.used_shards]
    return [ShardResult.model_validate_json(f[0]) for f in found if f is not None]


def commit_fan_out(
    settings: WorkerSettings,
    run_id: str,
    *,
    session: Any = None,
    s3: Any = None,
    log: Any = None,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> list[ContainerResult]:
    """Check every shard of every container, then commit each container's manifest and checkpoint."""
    _check_run_id(run_id)
    log = log or audit.get_logger()
    session = session or identity.aws_session(settings)
    s3 = s3 or s3_client(settings, session)
    bucket = storage.Bucket(s3, settings.bucket)
    # Everything is checked before the first write: a run whose shards did not all succeed commits nothing.
    pending: list[tuple[ContainerFanOut, CommitStore, LoadedState]] = []
    for name in settings.cosmos_containers:
        target = target_of(settings, name)
        planned = _load_plan(bucket, target, run_id)
        store = CommitStore(s3, target, log)
        loaded = store.load()
        if loaded.next_sequence != planned.next_sequence:
            committed = [m for m in store.committed_manifests() if m.sequence == planned.next_sequence]
            if committed and committed[0].run_id == run_id:
                log.info("fan_out_already_committed", container=name, run_id=run_id, sequence=planned.next_sequence)
                continue
            raise ExportError(
                f"{name}: another run committed sequence {planned.next_sequence} after run {run_id} was planned; "
                f"this run's parts are left uncommitted and will be cleaned up: plan a new run"
            )
        problems = [p for k in planned.used_shards for p in _shard_problems(bucket, planned, k, target)]
        if problems:
            bad = sorted({int(m.group(1)) for p in problems if (m := re.match(r"shard (\d+)", p))})
            fixes = ", ".join(
                f"`cosmos-export run --run {run_id} --shard {contract.FAN_OUT_SHARD_FORMAT.format(shard=k, shards=planned.shards)}`"
                for k in bad
            )
            raise ExportError(
                f"{name}: run {run_id} cannot be committed, nothing was written: {'; '.join(problems[:5])}; "
                f"rerun {fixes}, then commit again"
            )
        pending.append((planned, store, loaded))
    out = []
    for planned, store, loaded in pending:
        name = planned.container
        with container_errors(settings, name, planned.requested_mode, log, clock):
            shard_results = _results(bucket, planned, store.target)
            read = Read(
                results=sorted((r for s in shard_results for r in s.results), key=lambda r: r.key),
                fields=merged_fields(s.fields for s in shard_results),
                stats=ReadStats.total(s.stats for s in shard_results),
            )
            result = commit_container(
                settings,
                s3,
                store,
                loaded,
                manifest_mode=planned.manifest_mode,
                feed_ranges=len(planned.ranges),
                run_id=run_id,
                started_at=planned.started_at,
                read=read,
                definition=planned.definition,
                began=time.monotonic() - read.stats.read_seconds,
                log=log.bind(container=name),
                clock=clock,
            )
            removed = len(store.delete_unlisted(run_id, {p.key for r in read.results for p in r.records}))
            log.info(
                "fan_out_committed", container=name, run_id=run_id, sequence=result.sequence, unlisted_deleted=removed
            )
            out.append(result)
    return out
