"""`cosmos-export restore` and `drill`: a committed state written into an existing container, resumably.

Protocol
1. Every check runs before anything is written (RestoreRefused names the reason and the fix): a committed
   state at the sequence / time asked for, a target that exists with the source's partition key, and a
   target that is not one of the stack's exported source containers (unless --allow-source-target, which
   never deletes). Containers are never created: data-plane RBAC cannot, the Pulumi program declares them.
2. The restore id is a uuid5 of (account, database, container, sequence, target database, target
   container), so a rerun finds its progress at
   ``<container prefix>/restores/<restore id>/progress.json`` (`contract.RESTORES_DIR`).
3. The state's documents come in a deterministic order. They are upserted EXPORT_RESTORE_BATCH_DOCUMENTS
   (500) at a time, `concurrency` requests in flight, Low priority, within the RU/s budget (RuBudget); after each batch the
   progress moves (S3 conditional write: If-Match the etag it was read with), so a killed restore redoes at
   most the batch it was in (upserts are idempotent) and two restores of the same id cannot both advance.
   The progress remembers the key of the last committed document: if a rerun's order differs (another
   worker version), it starts from the first document again rather than skip the wrong ones.
4. ``--exact``: the target's LatestVersion change feed from the beginning lists every live document
   (`readChangeFeed`: a query would need executeQuery too); those whose (partition key, id) is not in the
   state are deleted. Keys and hashes of the state sit in a temporary SQLite file, so memory stays flat
   however large the container is.
5. The progress is marked complete; a later run of the same id starts a new attempt (a drill restores
   again and again into its scratch container).

Writes go as transactional batches: the SDK has no bulk executor in Python, but `execute_item_batch` sends up
to 100 operations of one partition key value in one request (atomic, one round trip, the charge of the
operations). The state comes ordered by (partition key, id), so the documents of one logical partition are
neighbours: each checkpoint batch is cut into runs of one partition key value (`write_units`), a run of one
document goes as a point write, a longer one as a batch. A batch the service refuses as a whole (an operation
failed, so nothing was written) is redone one point operation at a time, which reports the document at fault
as before (and deletes ignore 404 there). The gateway double serves batches as Cosmos does
(sandbox/doubles/cosmos/batch.py); `@vercel/cosmosdb-server` does not, see `_batch_unsupported`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from azure.cosmos import exceptions as cosmos_exceptions
from azure.cosmos.partition_key import NonePartitionKeyValue
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field
from tenacity import retry_if_exception

from cosmos_export import contract, layout, source
from cosmos_export.contract import Env
from cosmos_export.settings import WorkerSettings
from cosmos_export.throughput import RuBudget

#: System properties Cosmos adds to every document: never compared, never written back.
SYSTEM_PROPERTIES = contract.SYSTEM_PROPERTIES
PROGRESS_FORMAT_VERSION = 1
#: Cosmos's transactional batch limits: at most 100 operations, one partition key value, a request of at most
#: 2 MB (a run is cut below that, with room for each operation's envelope).
BATCH_MAX_OPERATIONS = 100
BATCH_MAX_BYTES = 2 * 1024 * 1024 - 64 * 1024
_BATCH_OPERATION_ENVELOPE = 64
_NAMESPACE = uuid.UUID("5d0f1f4e-3c1b-5c55-9a57-7b1a3c0e9d21")  # restore ids: uuid5 under this namespace


class RestoreRefused(Exception):
    """The restore was refused before anything was written; the message says why and what to do."""


class RestoreError(Exception):
    """The restore failed part way; its progress is kept and a rerun continues it."""


class RestoreInterrupted(RestoreError):
    """Stopped on request (SIGTERM) after the last checkpointed batch."""


# The RU/s budget (RuBudget) is cosmos_export.throughput's, shared with the export.


class _Charge:
    """response_hook of one SDK call: its own response's headers (point operations pass them per call)."""

    __slots__ = ("charge",)

    def __init__(self) -> None:
        self.charge = 0.0

    def __call__(self, headers: Any, _body: Any) -> None:
        try:
            self.charge += float(headers.get("x-ms-request-charge") or 0)
        except (TypeError, ValueError):
            pass


# --- documents, keys and hashes ---------------------------------------------


def user_properties(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in SYSTEM_PROPERTIES}


def document_hash(doc: dict) -> str:
    """sha256 of the document less system properties, keys sorted (the same bytes for the same JSON value)."""
    text = json.dumps(user_properties(doc), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def document_key(doc: dict, paths: list[str]) -> str:
    """(partition key, id) of a document as one canonical string, the same as the materialized state's keys."""
    from cosmos_export.materialize import partition_key_of, state_key

    return state_key(partition_key_of(doc, paths), str(doc.get("id")))


def sdk_partition_key(doc: dict, paths: list[str]) -> Any:
    """The partition key argument the SDK's point operations take for this document ({} = undefined)."""
    from cosmos_export.materialize import partition_key_of

    values = partition_key_of(doc, paths)
    if len(paths) == 1:
        return NonePartitionKeyValue if values[0] == {} else values[0]
    return values


class StateIndex:
    """(key, hash) of every state document, and of the target when read back, in a temporary SQLite file.

    Disk, not memory: a million documents' keys would otherwise cost ~150 MB of Python objects.
    """

    def __init__(self, directory: str | None = None):
        handle, self.path = tempfile.mkstemp(prefix="restore-index-", suffix=".sqlite", dir=directory)
        os.close(handle)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.executescript("""
            PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-8000;
            CREATE TABLE state(k TEXT PRIMARY KEY, h TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE target(k TEXT PRIMARY KEY, h TEXT NOT NULL) WITHOUT ROWID;
        """)
        self._pending: list[tuple[str, str]] = []

    def add_state(self, key: str, digest: str) -> None:
        self._pending.append((key, digest))
        if len(self._pending) >= 5000:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", self._pending)
            self._db.execute("COMMIT")
            self._pending.clear()

    def not_in_state(self, keys: list[str]) -> set[str]:
        self.flush()
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(k for (k,) in self._db.execute(f"SELECT k FROM state WHERE k IN ({marks})", chunk))
        return {k for k in keys if k not in found}

    def add_target(self, rows: Iterable[tuple[str, str]]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO target VALUES (?, ?)", rows)
        self._db.execute("COMMIT")

    def compare(self, examples: int = 10) -> dict[str, Any]:
        """Counts (and a few keys) of state vs target: expected, found, missing, unexpected, differing."""
        self.flush()
        q = self._db.execute

        def keys(sql: str) -> list[str]:
            return [k for (k,) in q(sql + f" LIMIT {examples}")]

        missing_sql = "SELECT s.k FROM state s WHERE NOT EXISTS (SELECT 1 FROM target t WHERE t.k = s.k)"
        extra_sql = "SELECT t.k FROM target t WHERE NOT EXISTS (SELECT 1 FROM state s WHERE s.k = t.k)"
        differ_sql = "SELECT s.k FROM state s JOIN target t ON t.k = s.k WHERE t.h <> s.h"
        count = lambda sql: q(f"SELECT COUNT(*) FROM ({sql})").fetchone()[0]  # noqa: E731
        return {
            "expected": q("SELECT COUNT(*) FROM state").fetchone()[0],
            "found": q("SELECT COUNT(*) FROM target").fetchone()[0],
            "missing": count(missing_sql),
            "unexpected": count(extra_sql),
            "differing": count(differ_sql),
            "examples": {"missing": keys(missing_sql), "unexpected": keys(extra_sql), "differing": keys(differ_sql)},
        }

    def close(self) -> None:
        self._db.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


# --- progress ----------------------------------------------------------------


class RestoreProgress(BaseModel):
    """progress.json: what a restore has committed to its target, moved after every batch."""

    model_config = ConfigDict(extra="forbid")
    format_version: int = PROGRESS_FORMAT_VERSION
    restore_id: str
    source: dict[str, str]
    sequence: int = Field(ge=1)
    manifest_keys: list[str]
    target: dict[str, str]
    exact: bool
    attempt: int = Field(ge=1)
    status: str  # running | complete
    #: Documents of the state, in its order, whose upsert is committed (the next run starts after them).
    documents_committed: int = Field(ge=0)
    #: Key of the last committed document (checked on resume: the order must be the same).
    last_key: str | None = None
    documents_total: int | None = None
    batches_committed: int = 0
    #: Where each run of this attempt started (documents_committed at its start): the evidence of resumes.
    runs_started_at: list[int] = Field(default_factory=list)
    deletes_applied: int = 0
    request_charge: float = 0.0
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


def restore_id(
    account: str, database: str, container: str, sequence: int, target_database: str, target_container: str
) -> str:
    return str(
        uuid.uuid5(_NAMESPACE, json.dumps([account, database, container, sequence, target_database, target_container]))
    )


def progress_key(source_target: layout.ExportTarget, rid: str) -> str:
    return f"{source_target.container_prefix}/{contract.RESTORES_DIR}/{rid}/progress.json"


def drill_key(source_target: layout.ExportTarget, at: datetime) -> str:
    return f"{source_target.container_prefix}/{contract.DRILLS_DIR}/{at.astimezone(timezone.utc):%Y%m%dT%H%M%S%fZ}.json"


class ProgressStore:
    """progress.json read and written with S3 conditional writes (If-None-Match: * first, then If-Match)."""

    def __init__(self, s3: Any, bucket: str, key: str):
        self._s3, self.bucket, self.key = s3, bucket, key
        self.etag: str | None = None

    def load(self) -> RestoreProgress | None:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404 or e.response.get("Error", {}).get(
                "Code"
            ) in ("NoSuchKey", "404"):
                return None
            raise
        body = response["Body"].read()
        self.etag = response["ETag"]
        try:
            return RestoreProgress.model_validate_json(body)
        except ValueError as e:
            raise RestoreError(
                f"restore progress s3://{self.bucket}/{self.key} is not valid ({str(e)[:300]}); it "
                "was left unchanged: restore a previous version of it from the bucket's version "
                "history, or delete it to restart this restore from the first document"
            ) from None

    def save(self, progress: RestoreProgress) -> None:
        condition = {"IfMatch": self.etag} if self.etag else {"IfNoneMatch": "*"}
        try:
            response = self._s3.put_object(
                Bucket=self.bucket,
                Key=self.key,
                ContentType="application/json",
                Body=progress.model_dump_json(indent=2).encode(),
                **condition,
            )
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412) or e.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                raise RestoreError(
                    f"another restore moved s3://{self.bucket}/{self.key} meanwhile (restore "
                    f"{progress.restore_id}): two restores of the same state into the same target ran at once; "
                    "let the other finish (its progress is kept), then rerun if needed"
                ) from None
            raise
        self.etag = response["ETag"]


# --- the plan (every check before any write) -------------------------------


@dataclass
class RestoreRequest:
    container: str
    target_container: str | None = None
    target_database: str | None = None
    sequence: int | None = None
    as_of: datetime | None = None
    exact: bool = False
    max_ru_per_second: float | None = None
    allow_source_target: bool = False


@dataclass
class RestoreResult:
    restore_id: str
    progress_key: str
    source: dict[str, str]
    target: dict[str, str]
    sequence: int
    manifest_keys: list[str]
    documents: int
    documents_upserted: int
    resumed_from: int
    deletes_applied: int
    request_charge: float
    seconds: float
    attempt: int
    state_report: dict[str, Any] = field(default_factory=dict)
    #: The target's container properties as read before writing.
    target_definition: dict[str, Any] = field(default_factory=dict)
    source_definition: dict[str, Any] | None = None


def _partition_key(definition: dict | None) -> dict[str, Any] | None:
    pk = (definition or {}).get("partitionKey") or (definition or {}).get("partition_key")
    if not pk:
        return None
    return {"paths": list(pk.get("paths") or []), "kind": pk.get("kind", "Hash"), "version": pk.get("version", 1)}


# --- the committed state (materialize) ---------------------------------------


@dataclass
class StateView:
    """What a restore needs of a materialized state (adapter over `materialize.open_state`)."""

    sequence: int
    manifest_keys: list[str]
    #: The source container's definition as the manifest recorded it (Cosmos JSON: partitionKey, ...).
    container_definition: dict[str, Any] | None
    #: The materialize report (JSON-able): deletes applied, what it cannot know, ...
    report: dict[str, Any]
    #: documents(start): bodies less system properties, each (partition key, id) once, in a deterministic
    #: order, the first `start` skipped.
    documents: Callable[[int], Iterable[dict]]
    close: Callable[[], None] = lambda: None


def open_state(
    s3: Any, source_target: layout.ExportTarget, *, sequence: int | None, as_of: datetime | None
) -> StateView:
    """The committed state at `sequence` / `as_of` (default: the latest); RestoreRefused when there is none."""
    from cosmos_export import materialize

    try:
        state = materialize.open_state(s3, source_target, sequence=sequence, as_of=as_of)
    except materialize.MaterializeError as e:
        raise RestoreRefused(str(e)) from None
    report = state.report

    def documents(start: int = 0) -> Iterator[dict]:
        return (d.body for d in state.documents(start))

    return StateView(
        sequence=report.sequence,
        manifest_keys=list(report.manifest_keys),
        container_definition=report.container_definition,
        report=report.to_dict(),
        documents=documents,
        close=state.close,
    )


# --- restore -------------------------------------------------------------------


def _refuse_source_target(settings: WorkerSettings, request: RestoreRequest, target_db: str, target: str) -> None:
    is_source = target_db == settings.cosmos_database and target in settings.cosmos_containers
    if is_source and not request.allow_source_target:
        raise RestoreRefused(
            f"target {target_db}/{target} is one of this stack's exported source containers "
            f"({Env.COSMOS_DATABASE}={settings.cosmos_database}, {Env.COSMOS_CONTAINERS}="
            f"{','.join(settings.cosmos_containers)}): restoring over a source overwrites live data. Restore into "
            f"a restore target container (Pulumi config restore.targetContainers) instead, or pass "
            f"--allow-source-target if overwriting the source is really what you want (it never deletes)"
        )
    if is_source and request.exact:
        raise RestoreRefused(
            f"--exact with --allow-source-target is refused: {target_db}/{target} is an exported source "
            f"container and a restore never deletes from a source; drop --exact (documents are upserted only)"
        )


def _target_container(client: Any, database: str, name: str) -> tuple[Any, dict]:
    proxy = client.get_database_client(database).get_container_client(name)
    for attempt in source.retrying():
        with attempt:
            try:
                return proxy, proxy.read()
            except cosmos_exceptions.CosmosResourceNotFoundError:
                raise RestoreRefused(
                    f"target container {database}/{name} does not exist: the worker never creates containers "
                    f"(data-plane RBAC cannot). Declare it in the stack (Pulumi config restore.targetContainers, "
                    f"partition key as the source's) and run `pulumi up`, or pass an existing --target-container"
                ) from None
    raise AssertionError("unreachable")


def _check_partition_key(
    source_definition: dict | None, target_definition: dict, where: str, manifest_keys: list[str]
) -> list[str]:
    wanted, have = _partition_key(source_definition), _partition_key(target_definition)
    if wanted is None:
        raise RestoreRefused(
            f"the manifests of this state ({manifest_keys[-1] if manifest_keys else 'none'}) do not record the "
            f"source container's definition, so the target's partition key cannot be checked: run an export "
            f"(`cosmos-export run --mode incremental`) with this worker version, then restore that sequence"
        )
    if have != wanted:
        raise RestoreRefused(
            f"target {where} has partition key {json.dumps(have)}, the source had {json.dumps(wanted)}: documents "
            f"would land under other keys. Declare the target with the source's partition key (paths, kind and "
            f"version; Pulumi config restore.targetContainers takes it from the source) or pick another "
            f"--target-container"
        )
    return wanted["paths"]


@dataclass
class _Context:
    settings: WorkerSettings
    request: RestoreRequest
    source_target: layout.ExportTarget
    target_database: str
    target_name: str
    container: Any
    target_definition: dict
    state: StateView
    paths: list[str]
    budget: RuBudget
    store: ProgressStore
    rid: str
    #: False once the target answered a batch as a server that does not serve them (see _batch_unsupported).
    batches: bool = True


def plan_restore(settings: WorkerSettings, request: RestoreRequest, *, client: Any, s3: Any) -> _Context:
    """Every check, in order, before anything is written; RestoreRefused with the reason and the fix."""
    target_db = request.target_database or settings.restore_target_database or settings.cosmos_database
    target = request.target_container or settings.restore_target_for(request.container)
    if not target:
        raise RestoreRefused(
            f"no target container for {request.container}: pass --target-container NAME or map it in "
            f"{Env.RESTORE_TARGETS} (source=target pairs, Pulumi config restore.targetContainers)"
        )
    if request.sequence is not None and request.as_of is not None:
        raise RestoreRefused("--sequence and --as-of both given: pass one of them (or neither for the latest)")
    _refuse_source_target(settings, request, target_db, target)
    source_target = layout.ExportTarget(
        settings.bucket, settings.prefix, settings.account_name or "", settings.cosmos_database, request.container
    )
    state = open_state(s3, source_target, sequence=request.sequence, as_of=request.as_of)
    try:
        container, definition = _target_container(client, target_db, target)
        paths = _check_partition_key(
            state.container_definition, definition, f"{target_db}/{target}", state.manifest_keys
        )
    except BaseException:
        state.close()
        raise
    rid = restore_id(
        source_target.account, source_target.database, source_target.container, state.sequence, target_db, target
    )
    store = ProgressStore(s3, settings.bucket, progress_key(source_target, rid))
    ru = request.max_ru_per_second if request.max_ru_per_second is not None else settings.max_ru_per_second
    return _Context(
        settings,
        request,
        source_target,
        target_db,
        target,
        container,
        definition,
        state,
        paths,
        RuBudget(ru),
        store,
        rid,
    )


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _start_progress(ctx: _Context, log: Any) -> tuple[RestoreProgress, bool]:
    """The progress to continue (resumed=True) or a new attempt, saved before the first write."""
    previous = ctx.store.load()
    if previous is not None and previous.status == "running" and previous.exact == ctx.request.exact:
        previous.runs_started_at.append(previous.documents_committed)
        previous.updated_at = _now()
        ctx.store.save(previous)
        log.info(
            "restore_resumed",
            restore_id=ctx.rid,
            documents_committed=previous.documents_committed,
            batches_committed=previous.batches_committed,
            attempt=previous.attempt,
        )
        return previous, True
    now = _now()
    progress = RestoreProgress(
        restore_id=ctx.rid,
        source={
            "account": ctx.source_target.account,
            "database": ctx.source_target.database,
            "container": ctx.source_target.container,
        },
        sequence=ctx.state.sequence,
        manifest_keys=ctx.state.manifest_keys,
        target={"database": ctx.target_database, "container": ctx.target_name},
        exact=ctx.request.exact,
        attempt=(previous.attempt + 1) if previous else 1,
        status="running",
        documents_committed=0,
        runs_started_at=[0],
        started_at=now,
        updated_at=now,
    )
    ctx.store.save(progress)
    return progress, False


def run_restore(
    settings: WorkerSettings,
    request: RestoreRequest,
    *,
    client: Any,
    s3: Any,
    stop: threading.Event | None = None,
    log: Any = None,
    keep_index: bool = False,
) -> tuple[RestoreResult, StateIndex | None]:
    """Restore (or continue restoring) a committed state into its target. Returns the result and, with
    `keep_index`, the state's key/hash index (the caller closes it)."""
    from cosmos_export import audit

    log = (log or audit.get_logger()).bind(container=request.container)
    stop = stop or threading.Event()
    began = time.monotonic()
    ctx = plan_restore(settings, request, client=client, s3=s3)
    try:
        return _restore(ctx, settings, request, stop, log, keep_index, began)
    finally:
        ctx.state.close()


def _restore(
    ctx: "_Context",
    settings: WorkerSettings,
    request: RestoreRequest,
    stop: threading.Event,
    log: Any,
    keep_index: bool,
    began: float,
) -> tuple[RestoreResult, StateIndex | None]:
    progress, resumed = _start_progress(ctx, log)
    resumed_from = progress.documents_committed
    log.info(
        "restore_start",
        restore_id=ctx.rid,
        sequence=ctx.state.sequence,
        target=f"{ctx.target_database}/{ctx.target_name}",
        exact=request.exact,
        resumed=resumed,
        documents_committed=progress.documents_committed,
        max_ru_per_second=ctx.budget.rate,
        progress_key=ctx.store.key,
    )
    index = StateIndex() if (request.exact or keep_index) else None
    upserted = 0
    try:
        with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="restore") as pool:
            upserted = _upsert_all(ctx, progress, pool, index, stop, log)
            if request.exact:
                assert index is not None
                _delete_unknown(ctx, progress, pool, index, stop, log)
        progress.status = "complete"
        progress.finished_at = progress.updated_at = _now()
        progress.request_charge = round(progress.request_charge, 2)
        ctx.store.save(progress)
    except BaseException:
        if index is not None:
            index.close()
        raise
    result = RestoreResult(
        restore_id=ctx.rid,
        progress_key=ctx.store.key,
        source=progress.source,
        target=progress.target,
        sequence=ctx.state.sequence,
        manifest_keys=ctx.state.manifest_keys,
        documents=progress.documents_total or 0,
        documents_upserted=upserted,
        resumed_from=resumed_from,
        deletes_applied=progress.deletes_applied,
        request_charge=round(progress.request_charge, 2),
        seconds=round(time.monotonic() - began, 3),
        attempt=progress.attempt,
        state_report=ctx.state.report,
        target_definition=ctx.target_definition,
        source_definition=ctx.state.container_definition,
    )
    log.info(
        "restore_done",
        restore_id=ctx.rid,
        sequence=result.sequence,
        documents=result.documents,
        documents_upserted=upserted,
        resumed_from=resumed_from,
        deletes_applied=result.deletes_applied,
        request_charge=result.request_charge,
        seconds=result.seconds,
    )
    if not keep_index and index is not None:
        index.close()
        index = None
    return result, index


def _throttled_or_transient(error: BaseException) -> bool:
    # The SDK already retried a 429 up to 30 times, honouring x-ms-retry-after-ms; a longer storm is waited
    # out here too rather than failing the batch.
    return source.is_transient(error) or (
        isinstance(error, (cosmos_exceptions.CosmosHttpResponseError, cosmos_exceptions.CosmosBatchOperationError))
        and error.status_code == 429
    )


def _retrying() -> Any:
    return source.retrying().copy(retry=retry_if_exception(_throttled_or_transient))


def _run_batch(
    ctx: _Context,
    pool: ThreadPoolExecutor,
    work: list[Any],
    call: Callable[[Any, _Charge], None],
    stop: threading.Event,
) -> float:
    """Run `call` for every item, `concurrency` at a time within the budget; all succeed or it raises."""
    charges: list[float] = []

    def one(item: Any) -> None:
        if stop.is_set():
            raise RestoreInterrupted("stop requested")
        reserved = ctx.budget.acquire()
        hook = _Charge()
        try:
            for attempt in _retrying():
                with attempt:
                    call(item, hook)
        finally:
            ctx.budget.settle(reserved, hook.charge)
            charges.append(hook.charge)

    futures = [pool.submit(one, item) for item in work]
    wait(futures, return_when=FIRST_EXCEPTION)
    if any(f.done() and f.exception() for f in futures):
        for f in futures:
            f.cancel()  # the rest of the batch is redone by the next run
    wait(futures)
    errors = [e for f in futures if not f.cancelled() and (e := f.exception()) is not None]
    if errors:
        real = [e for e in errors if not isinstance(e, RestoreInterrupted)]
        raise real[0] if real else errors[0]
    return sum(charges)


def write_units(docs: Iterable[dict], paths: list[str]) -> Iterator[list[dict]]:
    """Runs of neighbouring documents with one partition key value, each at most BATCH_MAX_OPERATIONS long and
    BATCH_MAX_BYTES of JSON as the SDK sends it: what one transactional batch may carry."""
    from cosmos_export.materialize import partition_key_of

    unit: list[dict] = []
    unit_key, unit_bytes = "", 0
    for doc in docs:
        key = json.dumps(partition_key_of(doc, paths), ensure_ascii=True)  # 1 and true are other keys
        size = len(json.dumps(doc)) + _BATCH_OPERATION_ENVELOPE
        if unit and (key != unit_key or len(unit) >= BATCH_MAX_OPERATIONS or unit_bytes + size > BATCH_MAX_BYTES):
            yield unit
            unit, unit_bytes = [], 0
        unit.append(doc)
        unit_key, unit_bytes = key, unit_bytes + size
    if unit:
        yield unit


def _batch_unsupported(error: cosmos_exceptions.CosmosHttpResponseError) -> bool:
    """The target does not serve transactional batches at all (an emulator such as @vercel/cosmosdb-server:
    400/404/405/500/501 to the batch request). Throttling, auth, timeouts and 413 are not that."""
    return error.status_code in (400, 404, 405, 500, 501)


def _write_unit(
    ctx: _Context,
    unit: list[dict],
    hook: _Charge,
    log: Any,
    *,
    point: Callable[[dict, _Charge], None],
    operation: Callable[[dict], tuple[str, tuple[Any, ...]]],
) -> None:
    """One run of documents of one partition key value: a transactional batch (one request, atomic), or a point
    operation each when it is one document, when the batch is refused, or when the target serves no batches."""
    if len(unit) > 1 and ctx.batches:
        try:
            ctx.container.execute_item_batch(
                [operation(doc) for doc in unit],
                partition_key=sdk_partition_key(unit[0], ctx.paths),
                priority="Low",
                response_hook=hook,
            )
            return
        except cosmos_exceptions.CosmosBatchOperationError as e:
            if e.status_code == 429:
                raise  # throttled: the whole batch again after the wait (_throttled_or_transient)
            # Atomic: nothing of it was written. Its charge still counts; the point operations say which
            # document is at fault (or, for deletes, skip those already gone).
            hook(e.headers or {}, None)
            log.warning(
                "restore_batch_refused",
                restore_id=ctx.rid,
                documents=len(unit),
                status=e.status_code,
                at=e.error_index,
                reason="redoing this batch one document at a time",
            )
        except cosmos_exceptions.CosmosHttpResponseError as e:
            if e.status_code == 413:
                pass  # larger than the service takes in one request (the size estimate was short): one by one
            elif _batch_unsupported(e):
                if ctx.batches:  # said once (threads already sending a batch fall back too)
                    log.warning(
                        "restore_batches_unsupported",
                        restore_id=ctx.rid,
                        status=e.status_code,
                        reason="the target does not serve transactional batches; writing one document per request",
                    )
                ctx.batches = False
            else:
                raise
    for doc in unit:
        point(doc, hook)


def _upsert_all(
    ctx: _Context,
    progress: RestoreProgress,
    pool: ThreadPoolExecutor,
    index: StateIndex | None,
    stop: threading.Event,
    log: Any,
) -> int:
    skip = progress.documents_committed
    upserted = 0
    batch: list[dict] = []
    batch_last_key: str | None = None

    def upsert(doc: dict, hook: _Charge) -> None:
        # no_response: the written body is not sent back (Prefer: return=minimal); ~10% less client CPU here.
        ctx.container.upsert_item(doc, priority="Low", no_response=True, response_hook=hook)

    def write(unit: list[dict], hook: _Charge) -> None:
        _write_unit(ctx, unit, hook, log, point=upsert, operation=lambda doc: ("upsert", (doc,)))

    def commit_batch() -> None:
        nonlocal batch, upserted
        charge = _run_batch(ctx, pool, list(write_units(batch, ctx.paths)), write, stop)
        upserted += len(batch)
        progress.documents_committed += len(batch)
        progress.last_key = batch_last_key
        progress.batches_committed += 1
        progress.request_charge += charge
        progress.updated_at = _now()
        ctx.store.save(progress)
        log.info(
            "restore_batch",
            restore_id=ctx.rid,
            documents_committed=progress.documents_committed,
            documents=len(batch),
            request_charge=round(charge, 2),
        )
        batch = []
        if stop.is_set():
            raise RestoreInterrupted(
                f"stopped after {progress.documents_committed} document(s) (batch {progress.batches_committed}); "
                f"rerun the same restore to continue from there"
            )

    # Without an index to fill, a resumed restore reads only what is left; with one, it reads every document.
    position = 0 if index is not None else max(skip - 1, 0)
    for doc in ctx.state.documents(position):
        doc = user_properties(doc)
        key = document_key(doc, ctx.paths)
        if index is not None:
            index.add_state(key, document_hash(doc))
        position += 1
        if position <= skip:
            if position == skip and progress.last_key is not None and key != progress.last_key:
                # The state's order is not the one the progress was written with: start again from the top.
                log.warning(
                    "restore_order_changed",
                    restore_id=ctx.rid,
                    at=position,
                    reason="the state's documents come in another order than when this restore started; "
                    "upserting every document again (idempotent)",
                )
                return _restart(ctx, progress, pool, index, stop, log)
            continue
        if stop.is_set():
            raise RestoreInterrupted(
                f"stopped after {progress.documents_committed} document(s); rerun the same "
                "restore to continue from there"
            )
        batch.append(doc)
        batch_last_key = key
        if len(batch) >= ctx.settings.restore_batch_documents:
            commit_batch()
    if batch:
        commit_batch()
    if position < skip:
        log.warning(
            "restore_order_changed",
            restore_id=ctx.rid,
            at=position,
            reason=f"the state has {position} document(s), the progress says {skip} were committed",
        )
        return _restart(ctx, progress, pool, index, stop, log)
    progress.documents_total = position
    if index is not None:
        index.flush()
    return upserted


def _restart(
    ctx: _Context,
    progress: RestoreProgress,
    pool: ThreadPoolExecutor,
    index: StateIndex | None,
    stop: threading.Event,
    log: Any,
) -> int:
    progress.documents_committed, progress.last_key = 0, None
    progress.runs_started_at.append(0)
    if index is not None:
        index._db.execute("DELETE FROM state")
        index._pending.clear()
    return _upsert_all(ctx, progress, pool, index, stop, log)


def target_documents(container: Any, stop: threading.Event, budget: RuBudget) -> Iterator[list[dict]]:
    """Pages of every live document of a container: its LatestVersion change feed from the beginning, one
    feed range after the other (readChangeFeed only; Low priority; each page within the budget)."""
    for feed_range in source.feed_ranges(container):
        hook = _Charge()
        pager = iter(
            container.query_items_change_feed(
                feed_range=feed_range,
                start_time="Beginning",
                mode="LatestVersion",
                priority="Low",
                max_item_count=1000,
                response_hook=hook,
            ).by_page()
        )
        while True:
            if stop.is_set():
                raise RestoreInterrupted("stop requested")
            reserved, before = budget.acquire(), hook.charge
            try:
                page = next(pager, None)
            finally:
                budget.settle(reserved, hook.charge - before)
            if page is None:
                break
            yield list(page)


def _delete_unknown(
    ctx: _Context,
    progress: RestoreProgress,
    pool: ThreadPoolExecutor,
    index: StateIndex,
    stop: threading.Event,
    log: Any,
) -> None:
    """Delete every target document the state does not have (--exact). Rerunnable: deleted ones are gone."""

    def delete(doc: dict, hook: _Charge) -> None:
        try:
            ctx.container.delete_item(
                doc["id"], partition_key=sdk_partition_key(doc, ctx.paths), priority="Low", response_hook=hook
            )
        except cosmos_exceptions.CosmosResourceNotFoundError:
            pass  # already gone (a previous run deleted it before its checkpoint)

    def write(unit: list[dict], hook: _Charge) -> None:
        _write_unit(ctx, unit, hook, log, point=delete, operation=lambda doc: ("delete", (doc["id"],)))

    consumed_before = ctx.budget.consumed
    deletes_charge = 0.0
    for page in target_documents(ctx.container, stop, ctx.budget):
        keyed = {document_key(d, ctx.paths): d for d in page}
        extra = index.not_in_state(list(keyed))
        if not extra:
            continue
        doomed = [keyed[k] for k in sorted(extra)]
        charge = _run_batch(ctx, pool, list(write_units(doomed, ctx.paths)), write, stop)
        deletes_charge += charge
        progress.deletes_applied += len(doomed)
        progress.request_charge += charge
        progress.updated_at = _now()
        ctx.store.save(progress)
        log.info(
            "restore_deletes",
            restore_id=ctx.rid,
            deleted=len(doomed),
            deletes_applied=progress.deletes_applied,
            request_charge=round(charge, 2),
        )
    # Reading the target's feed costs RUs too (the deletes' charges are already counted).
    progress.request_charge += ctx.budget.consumed - consumed_before - deletes_charge


def explain_restore_error(error: BaseException, settings: WorkerSettings, target: str) -> str:
    """Plain-language reason for a Cosmos failure during a restore or drill (the restore identity's view)."""
    if isinstance(error, cosmos_exceptions.CosmosHttpResponseError) and error.status_code == 403:
        first = (error.message or "").splitlines()[0] if error.message else ""
        return (
            f"Cosmos refused the restore identity (403/{error.sub_status}) on {target}: {first} The restore "
            f"identity ({Env.AZURE_CLIENT_ID}={settings.azure_client_id}) needs its own role with "
            f"{', '.join(contract.COSMOS_RESTORE_DATA_ACTIONS)} assigned on the restore target containers "
            f"(Pulumi config restore.targetContainers; `pulumi up`); it is never given a source container."
        )
    return source.explain_cosmos_error(error, settings)


# --- drill ---------------------------------------------------------------------


def _definition_view(definition: dict | None) -> dict[str, Any]:
    """The parts of a container definition a restore target must share with its source, normalized."""
    d = definition or {}
    get = lambda *names: next((d[n] for n in names if n in d), None)  # noqa: E731
    indexing = get("indexingPolicy", "indexing_policy") or {}
    unique = get("uniqueKeyPolicy", "unique_key_policy") or {}

    def paths(items: Any) -> list[str]:
        # Cosmos always adds the system path /"_etag"/? to excludedPaths: not part of what was declared.
        return sorted(p.get("path", "") for p in (items or []) if p.get("path") != '/"_etag"/?')

    return {
        "partitionKey": _partition_key(d),
        "defaultTtl": get("defaultTtl", "default_ttl"),
        "uniqueKeys": sorted(sorted(k.get("paths") or []) for k in (unique.get("uniqueKeys") or [])),
        "indexingPolicy": {
            "indexingMode": (indexing.get("indexingMode") or "consistent").lower(),
            "automatic": indexing.get("automatic", True),
            "includedPaths": paths(indexing.get("includedPaths")),
            "excludedPaths": paths(indexing.get("excludedPaths")),
            "compositeIndexes": indexing.get("compositeIndexes") or [],
            "spatialIndexes": indexing.get("spatialIndexes") or [],
        }
        if indexing
        else None,
    }


def compare_definitions(source_definition: dict | None, target_definition: dict) -> list[str]:
    """Differences (one line each) between the manifest's source definition and the target's."""
    if not source_definition:
        return ["the manifest records no container definition for the source"]
    wanted, have = _definition_view(source_definition), _definition_view(target_definition)
    # An absent defaultTtl / uniqueKeyPolicy means "off" on both sides; an indexing policy is compared only
    # when the manifest recorded one.
    return [
        f"{name}: source {json.dumps(wanted[name])}, target {json.dumps(have[name])}"
        for name in wanted
        if wanted[name] != have[name] and not (name == "indexingPolicy" and wanted[name] is None)
    ]


def worker_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cosmos-export")
    except PackageNotFoundError:
        return "unknown"


def _put_report(s3: Any, bucket: str, key: str, report: dict[str, Any]) -> str:
    # No retention header: the bucket's default Object Lock retention (where configured) applies to the
    # report, and the restore role needs no s3:PutObjectRetention. The checksum is what Object Lock requires.
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(report, indent=2).encode(),
        ContentType="application/json",
        ChecksumAlgorithm="SHA256",
        IfNoneMatch="*",
    )
    return key


def run_drill(
    settings: WorkerSettings,
    container: str,
    *,
    client: Any,
    s3: Any,
    stop: threading.Event | None = None,
    log: Any = None,
    clock: Callable[[], datetime] = _now,
) -> dict[str, Any]:
    """Restore the latest committed state into the container's scratch target exactly, read it back, compare
    every document and the definition, and write the drill report (returned; `report["ok"]`)."""
    from cosmos_export import audit

    log = (log or audit.get_logger()).bind(container=container)
    stop = stop or threading.Event()
    target = settings.restore_target_for(container)
    if not target:
        raise RestoreRefused(
            f"no scratch container for {container} in {Env.RESTORE_TARGETS} "
            f"({','.join(f'{s}={t}' for s, t in settings.restore_targets) or 'unset'}): map it as "
            f"{container}=<scratch container> (Pulumi config restore.targetContainers)"
        )
    source_target = layout.ExportTarget(
        settings.bucket, settings.prefix, settings.account_name or "", settings.cosmos_database, container
    )
    started_at = clock()
    request = RestoreRequest(
        container=container, target_container=target, target_database=settings.restore_target_database, exact=True
    )
    restore_began = time.monotonic()
    try:
        result, index = run_restore(settings, request, client=client, s3=s3, stop=stop, log=log, keep_index=True)
    except (RestoreRefused, RestoreError, cosmos_exceptions.CosmosHttpResponseError) as e:
        if isinstance(e, RestoreInterrupted):
            raise  # stopped (ECS stop): no verdict; the next drill continues the restore
        # A drill that cannot restore is a failed drill: that is evidence too.
        reason = (
            explain_restore_error(e, settings, f"{request.target_database}/{target}")
            if isinstance(e, cosmos_exceptions.CosmosHttpResponseError)
            else str(e)
        )
        failed = {
            "format_version": 1,
            "ok": False,
            "drill_started_at": started_at.isoformat(),
            "drill_finished_at": clock().isoformat(),
            "error": reason,
            "source": {"account": source_target.account, "database": source_target.database, "container": container},
            "target": {"database": request.target_database or settings.cosmos_database, "container": target},
            "restore_seconds": round(time.monotonic() - restore_began, 3),
            "identity": {
                "mode": settings.identity_mode,
                "tenant_id": settings.azure_tenant_id,
                "client_id": settings.azure_client_id,
            },
            "worker_version": worker_version(),
        }
        key = _put_report(s3, settings.bucket, drill_key(source_target, clock()), failed)
        log.error("drill_done", ok=False, report_key=key, error=reason)
        _drill_metric(log, settings, container, ok=False, at=clock())
        raise
    assert index is not None
    try:
        restore_seconds = time.monotonic() - restore_began
        verify_began = time.monotonic()
        budget = RuBudget(settings.max_ru_per_second)
        proxy = client.get_database_client(result.target["database"]).get_container_client(target)
        paths = _partition_key(result.target_definition)["paths"]  # type: ignore[index]
        for page in target_documents(proxy, stop, budget):
            index.add_target((document_key(d, paths), document_hash(d)) for d in page)
        compared = index.compare()
        verify_seconds = time.monotonic() - verify_began
    finally:
        index.close()
    differences = compare_definitions(result.source_definition, proxy.read())
    mismatched = compared["missing"] + compared["unexpected"] + compared["differing"]
    ok = mismatched == 0 and compared["found"] == compared["expected"] and not differences
    finished_at = clock()
    state = result.state_report
    report = {
        "format_version": 1,
        "ok": ok,
        "drill_started_at": started_at.isoformat(),
        "drill_finished_at": finished_at.isoformat(),
        "source": result.source,
        "sequence": result.sequence,
        "manifest_keys": result.manifest_keys,
        "target": result.target,
        "restore_id": result.restore_id,
        "restore_progress_key": result.progress_key,
        "documents_expected": compared["expected"],
        "documents_found": compared["found"],
        "documents_mismatched": mismatched,
        "documents_missing": compared["missing"],
        "documents_unexpected": compared["unexpected"],
        "documents_differing": compared["differing"],
        "mismatch_examples": compared["examples"],
        "deletes_applied": result.deletes_applied,
        "state_deletes_applied": state.get("deletes_applied"),
        "unknown_delete_incrementals": state.get("unknown_delete_incrementals"),
        "definition_matches": not differences,
        "definition_differences": differences,
        "restore_seconds": round(restore_seconds, 3),
        "verify_seconds": round(verify_seconds, 3),
        "request_charge": round(result.request_charge + budget.consumed, 2),
        "identity": {
            "mode": settings.identity_mode,
            "tenant_id": settings.azure_tenant_id,
            "client_id": settings.azure_client_id,
        },
        "worker_version": worker_version(),
        "materialize_report": state,
    }
    key = _put_report(s3, settings.bucket, drill_key(source_target, finished_at), report)
    report["report_key"] = key
    log.info(
        "drill_done",
        ok=ok,
        report_key=key,
        sequence=result.sequence,
        documents_expected=compared["expected"],
        documents_found=compared["found"],
        documents_mismatched=mismatched,
        deletes_applied=result.deletes_applied,
        definition_matches=not differences,
        restore_seconds=report["restore_seconds"],
        request_charge=report["request_charge"],
    )
    _drill_metric(log, settings, container, ok=ok, at=finished_at)
    return report


def _drill_metric(log: Any, settings: WorkerSettings, container: str, *, ok: bool, at: datetime) -> None:
    """DrillFailed (1 failed, 0 passed) in EMF, per container: the stack's drill-failed alarm watches it."""
    from cosmos_export import metrics

    metrics.emit(log, settings, container, "drill", at, {contract.Metric.DRILL_FAILED: 0 if ok else 1})
