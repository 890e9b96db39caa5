"""A container's state as of a committed point, rebuilt from the export's manifests and parts.

The state at sequence N (or the last run finished at or before a time) is the latest full snapshot at or
before N plus every run after it up to N. Per (partition key, id) the last write wins, ordered by sequence,
then the change's LSN (`_lsn`, or `metadata.lsn` for AllVersionsAndDeletes), then position in the parts.
Deletes are applied where the export recorded them: AllVersionsAndDeletes incrementals carry one record per
delete (TTL expiries flagged `timeToLiveExpired`, counted apart). LatestVersion incrementals carry no
deletes: a document deleted since the snapshot is still in the state, and the report says how many such
runs there are and when the snapshot was taken (never silent about resurrected deletes).

A filtered query snapshot (`EXPORT_QUERY_FILTER`) is not a full state: it never serves as the base. Its
documents are applied like an incremental's, on top of the previous full snapshot; when there is none the
state is marked incomplete. Either way the report names the filter.

Memory does not grow with the container: parts are streamed line by line and every (key, version) goes to
an SQLite file in a temporary directory (one row per key, the winner), so the documents come out each
exactly once, ordered by key (deterministic: a restore resumes by position), and a corrupted part (sha256,
byte or document count different from its manifest) is refused before a single document is handed out.
Disk use is about the uncompressed size of the state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cosmos_export import jsonl, layout, sdk_json
from cosmos_export.commit import CheckpointError, CommitStore, Manifest, ManifestPart
from cosmos_export.contract import SYSTEM_PROPERTIES

ALL_VERSIONS: str = "AllVersionsAndDeletes"
#: Rows per SQLite executemany (one transaction for the whole load).
_BATCH = 2000


class MaterializeError(Exception):
    """Refused before anything was produced; the message says why and what to do."""


class CorruptPartError(MaterializeError):
    """A part does not match its manifest (sha256, bytes, document count, or unreadable)."""


@dataclass(frozen=True)
class StateDocument:
    """One document of the state. `partition_key` has one value per partition key path ({} = undefined)."""

    partition_key: list[Any]
    id: str
    body: dict


@dataclass
class MaterializeReport:
    """What the state is made of and what it cannot know (JSON-able through `to_dict`)."""

    account: str
    database: str
    container: str
    #: The committed sequence the state is as of.
    sequence: int
    #: Time asked for (--as-of), if any; the state is the last run finished at or before it.
    as_of: str | None
    #: The run that is the state's base, and when it ran.
    snapshot_sequence: int
    snapshot_mode: str
    snapshot_started_at: str
    snapshot_finished_at: str
    #: Keys of the manifests read, base first.
    manifest_keys: list[str]
    parts_read: int = 0
    #: Lines read from the parts (documents, versions and delete records).
    records_read: int = 0
    #: Documents in the state.
    documents: int = 0
    #: Delete records applied (AllVersionsAndDeletes), user deletes and TTL expiries apart.
    deletes_applied: int = 0
    ttl_expiries_applied: int = 0
    #: Runs after the snapshot that read LatestVersion (no deletes): documents deleted during them may still
    #: be in this state. 0 = deletes are exact.
    unknown_delete_incrementals: int = 0
    #: False when the base is a filtered query snapshot (the state holds only part of the container).
    complete: bool = True
    #: Filtered query snapshots in the chain: {"sequence": n, "filter": "..."}.
    filtered_snapshots: list[dict[str, Any]] = field(default_factory=list)
    system_properties_kept: bool = False
    #: The source container's definition as the manifests recorded it (Cosmos JSON: partitionKey, ...).
    container_definition: dict[str, Any] | None = None
    #: Sequence of the manifest the definition was taken from (the state's own, or a later one for format-1 chains).
    container_definition_sequence: int | None = None
    #: Plain-language warnings (what the state may hold that the source no longer has, or lack).
    warnings: list[str] = field(default_factory=list)

    @property
    def manifests_read(self) -> int:
        return len(self.manifest_keys)

    @property
    def deletes_exact(self) -> bool:
        return self.unknown_delete_incrementals == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "manifests_read": self.manifests_read, "deletes_exact": self.deletes_exact}

    def summary_lines(self) -> list[str]:
        """The report as the CLI prints it; warnings last, never left out."""
        lines = [
            f"{self.account}/{self.database}/{self.container} as of sequence {self.sequence}"
            + (f" (--as-of {self.as_of})" if self.as_of else ""),
            f"  base: {self.snapshot_mode} sequence {self.snapshot_sequence} (ran {self.snapshot_started_at} .. "
            f"{self.snapshot_finished_at}); {self.manifests_read} manifest(s), {self.parts_read} part(s), "
            f"{self.records_read} record(s) read",
            f"  documents: {self.documents}; deletes applied: {self.deletes_applied}, TTL expiries applied: "
            f"{self.ttl_expiries_applied}; system properties {'kept' if self.system_properties_kept else 'removed'}",
        ]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return lines


# --- pure planning ---------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Which manifests make the state: `chain[0]` is the base, `chain[-1]` the point."""

    chain: list[Manifest]
    as_of: datetime | None


def _is_filtered(m: Manifest) -> bool:
    return m.mode == "query-snapshot" and bool(m.query_filter)


def _is_full_snapshot(m: Manifest) -> bool:
    # Format-1 query snapshots did not record a filter: they count as full (the only reading possible).
    return m.mode in ("snapshot", "query-snapshot") and not _is_filtered(m)


def plan(manifests: list[Manifest], *, where: str, sequence: int | None = None, as_of: datetime | None = None) -> Plan:
    """The chain for `sequence` / `as_of` (default: the latest committed); MaterializeError when refused.

    `manifests` are the container's committed manifests; `where` names them in messages (s3://...).
    """
    if sequence is not None and as_of is not None:
        raise MaterializeError(
            f"both --sequence {sequence} and --as-of {as_of.isoformat()} were given: pass "
            f"one of them (or neither, for the latest committed state)"
        )
    if not manifests:
        raise MaterializeError(
            f"no committed export under {where}: nothing to materialize. Run an export "
            f"first (`cosmos-export run --mode snapshot`), or check --bucket/--prefix and "
            f"the container name"
        )
    ordered = sorted(manifests, key=lambda m: m.sequence)
    sequences = [m.sequence for m in ordered]
    first, last = ordered[0], ordered[-1]
    if as_of is not None:
        if as_of.tzinfo is None:
            raise MaterializeError(
                f"--as-of {as_of.isoformat()} has no time zone: add one, e.g. {as_of.isoformat()}Z for UTC"
            )
        done = [m for m in ordered if m.finished_at <= as_of]
        if not done:
            raise MaterializeError(
                f"--as-of {as_of.isoformat()} is before the first committed run under {where} (sequence "
                f"{first.sequence} finished at {first.finished_at.isoformat()}): pass a time at or after it"
            )
        point = done[-1].sequence
    elif sequence is not None:
        if sequence not in sequences:
            raise MaterializeError(
                f"--sequence {sequence} is not a committed sequence under {where}: committed are "
                f"{_ranges(sequences)}; pass one of them, or --as-of a time"
            )
        point = sequence
    else:
        point = last.sequence
    upto = [m for m in ordered if m.sequence <= point]
    bases = [i for i, m in enumerate(upto) if _is_full_snapshot(m)]
    if bases:
        start = bases[-1]
    else:  # only filtered snapshots: the earliest one is the base of an incomplete state
        starts = [i for i, m in enumerate(upto) if m.mode != "incremental"]
        if not starts:
            raise MaterializeError(
                f"no snapshot at or before sequence {point} under {where} (the earliest committed manifest, "
                f"sequence {first.sequence}, is an incremental: earlier manifests are missing): restore the "
                f"missing manifests from the bucket's version history, or take a snapshot and materialize that"
            )
        start = starts[0]
    chain = upto[start:]
    for before, after in zip(chain, chain[1:]):
        if after.sequence != before.sequence + 1:
            raise MaterializeError(
                f"manifests {before.sequence + 1}..{after.sequence - 1} under {where} are missing between "
                f"the snapshot (sequence {chain[0].sequence}) and sequence {point}: the state cannot be rebuilt "
                f"without them. Restore them from the bucket's version history, or pick a sequence before the gap"
            )
    return Plan(chain=chain, as_of=as_of)


def _ranges(values: list[int]) -> str:
    """1, 2, 3, 5 -> "1..3, 5"."""
    spans: list[list[int]] = []
    for v in values:
        if spans and v == spans[-1][1] + 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in spans)


def _unknown_delete_runs(chain: list[Manifest]) -> int:
    """Runs after the base that cannot have recorded deletes."""
    return sum(1 for m in chain[1:] if m.mode != "incremental" or m.change_feed_mode != ALL_VERSIONS)


def warnings_of(report: MaterializeReport) -> list[str]:
    out = []
    if report.unknown_delete_incrementals:
        out.append(
            f"{report.unknown_delete_incrementals} run(s) since the snapshot at sequence {report.snapshot_sequence} "
            f"(finished {report.snapshot_finished_at}) read the change feed in LatestVersion mode, which does not "
            f"record deletes: documents deleted since then may still be in this state. Take a snapshot "
            f"(`cosmos-export run --mode snapshot`) for an exact state, or export with "
            f"EXPORT_CHANGE_FEED_MODE=AllVersionsAndDeletes (continuous backup) so deletes are recorded"
        )
    for f in report.filtered_snapshots:
        out.append(
            f"sequence {f['sequence']} is a filtered query snapshot (WHERE {f['filter']}): it holds only "
            f"the documents matching the filter; documents outside it changed before that run and "
            f"after the previous one are missing"
        )
    if not report.complete:
        out.append(
            "this state is NOT the full container: its base is a filtered query snapshot (no full snapshot "
            "at or before this sequence); take an unfiltered snapshot for a full state"
        )
    return out


# --- document shapes -------------------------------------------------------


def partition_key_of(doc: dict, paths: list[str]) -> list[Any]:
    """The document's value at each partition key path ("/a/b" is nested); {} where it has none (undefined)."""
    values = []
    for path in paths:
        value: Any = doc
        for name in path.strip("/").split("/"):
            name = name.replace("~1", "/").replace("~0", "~")  # JSON-pointer escapes
            if isinstance(value, dict) and name in value:
                value = value[name]
            else:
                value = {}
                break
        values.append(value)
    return values


def _delete_partition_key(metadata: dict, paths: list[str]) -> list[Any]:
    """A delete record's partition key: `metadata.partitionKey` is {"<path without />": value, ...}."""
    pk = metadata.get("partitionKey")
    if not isinstance(pk, dict):
        return [{} for _ in paths]
    values = []
    for path in paths:
        flat = path.lstrip("/")
        values.append(pk[flat] if flat in pk else partition_key_of(pk, [path])[0])
    return values


def _is_change(obj: Any) -> bool:
    """An AllVersionsAndDeletes record ({"current", "metadata": {"operationType", ...}, "previous"?})."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("metadata"), dict)
        and "operationType" in obj["metadata"]
        and set(obj) <= {"current", "metadata", "previous"}
    )


def state_key(partition_key: list[Any], doc_id: str) -> str:
    """The sort key of a document: ASCII JSON of [partition key values, id] (same value, same key)."""
    return json.dumps([partition_key, doc_id], ensure_ascii=True, separators=(",", ":"))


# --- the state ---------------------------------------------------------------


class MaterializedState:
    """The rebuilt state; use as a context manager (or call `close`) to remove its temporary files."""

    def __init__(
        self, report: MaterializeReport, db_path: str, workdir: str, owned: bool, keep_system_properties: bool
    ) -> None:
        self.report = report
        self._db_path = db_path
        self._keep = keep_system_properties
        self._cleanup = weakref.finalize(self, _remove, workdir if owned else db_path, owned)

    def documents(self, start: int = 0) -> Iterator[StateDocument]:
        """Every document of the state once, ordered by (partition key, id); `start` skips that many
        (a resumed restore passes how many it already wrote)."""
        if start < 0:
            raise ValueError(f"start={start} must be >= 0")
        db = sqlite3.connect(self._db_path)
        try:
            rows = db.execute("SELECT key, body FROM state WHERE deleted = 0 ORDER BY key LIMIT -1 OFFSET ?", (start,))
            for key, body in rows:
                partition_key, doc_id = json.loads(key)
                doc = sdk_json.loads(body)
                if not self._keep:
                    for name in SYSTEM_PROPERTIES:
                        doc.pop(name, None)
                yield StateDocument(partition_key, doc_id, doc)
        finally:
            db.close()

    def rows(self) -> Iterator[tuple[list[Any], str, int, bytes]]:
        """Every document once, ordered by (partition key, id), as (partition key, id, sequence, the JSON bytes
        as exported, system properties kept): what the analytics tables store, without a parse per row."""
        db = sqlite3.connect(self._db_path)
        try:
            for key, seq, body in db.execute("SELECT key, seq, body FROM state WHERE deleted = 0 ORDER BY key"):
                partition_key, doc_id = json.loads(key)
                yield partition_key, doc_id, seq, body
        finally:
            db.close()

    def close(self) -> None:
        self._cleanup()

    def __enter__(self) -> "MaterializedState":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


def _remove(path: str, is_dir: bool) -> None:
    if is_dir:
        shutil.rmtree(path, ignore_errors=True)
    else:
        for suffix in ("", "-journal", "-wal"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass


def open_state(
    s3: Any,
    target: layout.ExportTarget,
    *,
    sequence: int | None = None,
    as_of: datetime | None = None,
    keep_system_properties: bool = False,
    workdir: str | None = None,
) -> MaterializedState:
    """Rebuild the committed state of `target` at `sequence` / `as_of` (default: the latest).

    Reads and verifies every part of the chain before returning, so every refusal (MaterializeError) and
    every corrupted part (CorruptPartError) comes before a single document. `workdir` holds the SQLite
    file (default: a new temporary directory, removed on close). The result's `report` says what the state
    is made of and what it cannot know; `documents()` streams it.
    """
    store = CommitStore(s3, target)
    where = f"s3://{target.bucket}/{target.manifests_prefix}"
    try:
        manifests = store.committed_manifests()
    except CheckpointError as e:
        raise MaterializeError(str(e)) from None
    chosen = plan(manifests, where=where, sequence=sequence, as_of=as_of)
    chain = chosen.chain
    definition, definition_sequence = definition_of(chain, manifests, where)
    paths = definition["partitionKey"]["paths"]
    base, point = chain[0], chain[-1]
    report = MaterializeReport(
        account=target.account,
        database=target.database,
        container=target.container,
        sequence=point.sequence,
        as_of=as_of.isoformat() if as_of else None,
        snapshot_sequence=base.sequence,
        snapshot_mode=base.mode,
        snapshot_started_at=base.started_at.isoformat(),
        snapshot_finished_at=base.finished_at.isoformat(),
        manifest_keys=[layout.manifest_key(target, m.sequence) for m in chain],
        unknown_delete_incrementals=_unknown_delete_runs(chain),
        complete=not _is_filtered(base),
        filtered_snapshots=[{"sequence": m.sequence, "filter": m.query_filter} for m in chain if _is_filtered(m)],
        system_properties_kept=keep_system_properties,
        container_definition=definition,
        container_definition_sequence=definition_sequence,
    )
    owned = workdir is None
    directory = tempfile.mkdtemp(prefix="cosmos-materialize-") if workdir is None else workdir
    db_path = os.path.join(directory, f"state-{os.getpid()}-{id(report):x}.sqlite")
    try:
        _load(s3, target, chain, paths, db_path, report)
    except BaseException:
        _remove(directory if owned else db_path, owned)
        raise
    report.warnings = warnings_of(report)
    return MaterializedState(report, db_path, directory, owned, keep_system_properties)


def definition_of(chain: list[Manifest], manifests: list[Manifest], where: str) -> tuple[dict, int]:
    """The point's recorded definition, else the nearest later one (a container's partition key never changes)."""
    point = chain[-1].sequence
    candidates = [m for m in reversed(chain) if m.container_definition] + sorted(
        (m for m in manifests if m.sequence > point and m.container_definition), key=lambda m: m.sequence
    )
    if not candidates:
        raise MaterializeError(
            f"no manifest under {where} records the container's definition (partition key paths; manifests of "
            f"format 1 predate it), so documents cannot be keyed by (partition key, id): run one export with "
            f"this worker version (`cosmos-export run --mode incremental`); its manifest's definition then "
            f"applies to every earlier sequence as well"
        )
    return candidates[0].container_definition.to_cosmos(), candidates[0].sequence  # type: ignore[union-attr]


_UPSERT = (
    "INSERT INTO state (key, seq, lsn, ord, deleted, body) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET seq = excluded.seq, lsn = excluded.lsn, ord = excluded.ord, "
    "deleted = excluded.deleted, body = excluded.body "
    "WHERE (excluded.seq, excluded.lsn, excluded.ord) > (state.seq, state.lsn, state.ord)"
)


def _load(
    s3: Any,
    target: layout.ExportTarget,
    chain: list[Manifest],
    paths: list[str],
    db_path: str,
    report: MaterializeReport,
) -> None:
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -16000")  # 16 MB page cache: memory stays flat whatever the size
        db.execute(
            "CREATE TABLE state (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, lsn INTEGER NOT NULL, "
            "ord INTEGER NOT NULL, deleted INTEGER NOT NULL, body BLOB) WITHOUT ROWID"
        )
        db.execute("BEGIN")
        ordinal = 0
        for manifest in chain:
            changes, detect = change_flags(manifest)
            for part in manifest.parts:
                rows: list[tuple] = []
                for line in part_lines(s3, target, manifest, part):
                    ordinal += 1
                    report.records_read += 1
                    rows.append(_row(line, manifest.sequence, ordinal, paths, changes, detect, report, part))
                    if len(rows) >= _BATCH:
                        db.executemany(_UPSERT, rows)
                        rows.clear()
                if rows:
                    db.executemany(_UPSERT, rows)
                report.parts_read += 1
        db.execute("COMMIT")
        report.documents = db.execute("SELECT count(*) FROM state WHERE deleted = 0").fetchone()[0]
    finally:
        db.close()


def change_flags(manifest: Manifest) -> tuple[bool, bool]:
    """(lines are AllVersionsAndDeletes change records, lines may be: format 1 recorded no mode)."""
    incremental = manifest.mode == "incremental"
    return incremental and manifest.change_feed_mode == ALL_VERSIONS, incremental and manifest.change_feed_mode is None


@dataclass(frozen=True)
class Record:
    """One exported line, decoded: a document version or (AllVersionsAndDeletes) a delete."""

    partition_key: list[Any]
    id: str
    #: The change's LSN (`_lsn`, or `metadata.lsn`); -1 when unknown (query snapshots).
    lsn: int
    #: The document's JSON as exported (a change record's `current`, re-serialized); None for a delete.
    body: bytes | None
    #: AllVersionsAndDeletes: create, replace or delete; None for a plain document line.
    operation: str | None = None
    ttl_expired: bool = False


def decode_record(line: bytes, paths: list[str], changes: bool, detect: bool, part: ManifestPart) -> Record:
    """Decode one line of `part` (`changes`: an AllVersionsAndDeletes incremental; `detect`: format 1,
    recognise change records by shape); CorruptPartError when it is not a usable record."""
    try:
        obj = sdk_json.loads(line)
    except ValueError as e:
        raise CorruptPartError(
            f"part {part.key} has a line that is not JSON ({e}): refused, nothing produced; "
            f"restore the object's version {part.version_id or '(latest)'} from the bucket's "
            f"version history"
        ) from None
    operation = None
    if changes or (detect and _is_change(obj)):
        metadata = obj.get("metadata") or {}
        lsn = int(metadata.get("lsn") or 0)
        operation = metadata.get("operationType")
        if operation == "delete":
            previous = obj.get("previous") or {}
            doc_id = metadata.get("id", previous.get("id"))
            if doc_id is None:
                raise CorruptPartError(f"part {part.key} has a delete record without an id: {line[:200]!r}")
            pk = (
                _delete_partition_key(metadata, paths)
                if "partitionKey" in metadata
                else partition_key_of(previous, paths)
            )
            return Record(pk, doc_id, lsn, None, operation, bool(metadata.get("timeToLiveExpired")))
        doc = obj.get("current") or {}
        body = jsonl.line_bytes(doc, not jsonl.needs_stdlib(doc))
    else:
        doc = obj
        lsn = doc.get("_lsn")
        lsn = lsn if type(lsn) is int else -1  # query snapshots have no _lsn: position decides
        body = line
    doc_id = doc.get("id")
    if not isinstance(doc_id, str):
        raise CorruptPartError(f"part {part.key} has a document without a string id: {line[:200]!r}")
    return Record(partition_key_of(doc, paths), doc_id, lsn, body, operation)


def _row(
    line: bytes,
    sequence: int,
    ordinal: int,
    paths: list[str],
    changes: bool,
    detect: bool,
    report: MaterializeReport,
    part: ManifestPart,
) -> tuple:
    rec = decode_record(line, paths, changes, detect, part)
    if rec.body is None:
        if rec.ttl_expired:
            report.ttl_expiries_applied += 1
        else:
            report.deletes_applied += 1
        return state_key(rec.partition_key, rec.id), sequence, rec.lsn, ordinal, 1, None
    return state_key(rec.partition_key, rec.id), sequence, rec.lsn, ordinal, 0, rec.body


class _Tee:
    """Reads an S3 body while hashing and counting the compressed bytes."""

    def __init__(self, body: Any) -> None:
        self.body, self.sha, self.size = body, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.body.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


def part_lines(s3: Any, target: layout.ExportTarget, manifest: Manifest, part: ManifestPart) -> Iterator[bytes]:
    """The part's lines, streamed; CorruptPartError (after the last line) unless it matches its manifest."""
    url = f"s3://{target.bucket}/{part.key}"
    fix = (
        f"restore the object (version {part.version_id or 'as listed in the manifest'}) from the bucket's "
        f"version history, or materialize a sequence before {manifest.sequence}"
    )
    version = {"VersionId": part.version_id} if part.version_id else {}
    try:
        body = s3.get_object(Bucket=target.bucket, Key=part.key, **version)["Body"]
    except (ClientError, BotoCoreError) as e:
        raise CorruptPartError(
            f"part {url} of sequence {manifest.sequence} cannot be read ({e}): refused, nothing produced; {fix}"
        ) from None
    tee = _Tee(body)
    count = 0
    tail = b""
    try:
        for chunk in jsonl.iter_decompressed(tee, jsonl.compression_of_key(part.key)):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            count += len(lines)
            yield from lines
    except CorruptPartError:
        raise
    except Exception as e:  # corrupt compression: say which part
        while tee.read(1 << 20):
            pass
        problem = f"it does not decompress ({type(e).__name__}: {e})"
    else:
        problem = ""
        if tail:
            problem = "its last line is truncated (no newline)"
    digest = tee.sha.hexdigest()
    checks = [("sha256", part.sha256, digest), ("bytes", part.bytes, tee.size), ("documents", part.documents, count)]
    differs = [
        f"{name} {actual} where the manifest says {expected}" for name, expected, actual in checks if expected != actual
    ]
    if differs or problem:
        raise CorruptPartError(
            f"part {url} of sequence {manifest.sequence} is corrupted: "
            f"{'; '.join(differs + ([problem] if problem else []))}. Refused, nothing "
            f"produced; {fix}"
        )


# --- output --------------------------------------------------------------------


OUTPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")


@dataclass(frozen=True)
class Destination:
    """Where materialize writes: a local file or an S3 object, and the report beside it."""

    url: str
    bucket: str | None
    key: str  # local path when bucket is None
    compression: str | None  # None = plain JSON Lines

    @property
    def report_key(self) -> str:
        stem = next(self.key[: -len(s)] for s in sorted(OUTPUT_SUFFIXES, key=len, reverse=True) if self.key.endswith(s))
        return f"{stem}.report.json"

    @property
    def report_url(self) -> str:
        return f"s3://{self.bucket}/{self.report_key}" if self.bucket else self.report_key


def destination(dest: str, container: str) -> Destination:
    """Parse --to: a path or s3://bucket/key ending in .jsonl / .jsonl.gz / .jsonl.zst, or a folder
    (ending in /) that gets `<container>.jsonl.zst`. MaterializeError otherwise."""
    if dest.startswith("s3://"):
        bucket, _, key = dest[5:].partition("/")
        if not bucket:
            raise MaterializeError(
                f"--to {dest!r} names no bucket: use s3://BUCKET/PREFIX/ or s3://BUCKET/KEY.jsonl.zst"
            )
    else:
        bucket, key = None, dest
    if not key or key.endswith("/") or (bucket is None and os.path.isdir(key)):
        key = os.path.join(key, f"{container}.jsonl.zst") if bucket is None else f"{key}{container}.jsonl.zst"
    suffix = next((s for s in (".jsonl.gz", ".jsonl.zst", ".jsonl") if key.endswith(s)), None)
    if suffix is None:
        raise MaterializeError(
            f"--to {dest!r} has no JSON Lines suffix: end it in {', '.join(OUTPUT_SUFFIXES)} "
            f"(compression follows the suffix), or with / for <container>.jsonl.zst inside"
        )
    compression = {".jsonl": None, ".jsonl.gz": "gzip", ".jsonl.zst": "zstd"}[suffix]
    url = f"s3://{bucket}/{key}" if bucket else key
    return Destination(url=url, bucket=bucket, key=key, compression=compression)


def write_jsonl(state: MaterializedState, out: Any, compression: str | None) -> tuple[int, int]:
    """Write the state as JSON Lines to the binary file `out`; (documents, bytes written)."""
    compressor = jsonl.new_compressor(compression) if compression else None  # type: ignore[arg-type]
    count = written = 0
    batch: list[bytes] = []

    def flush() -> int:
        data = b"".join(batch)
        batch.clear()
        if compressor is not None:
            data = compressor.compress(data)
        out.write(data)
        return len(data)

    size = 0
    for doc in state.documents():
        line = jsonl.line_bytes(doc.body, not jsonl.needs_stdlib(doc.body)) + b"\n"
        batch.append(line)
        size += len(line)
        count += 1
        if size >= 1 << 20:
            written += flush()
            size = 0
    written += flush()
    if compressor is not None:
        tail = compressor.flush()
        out.write(tail)
        written += len(tail)
    return count, written


def materialize_to(
    s3: Any,
    target: layout.ExportTarget,
    dest: Destination,
    *,
    sequence: int | None = None,
    as_of: datetime | None = None,
    keep_system_properties: bool = False,
    dest_s3: Any = None,
) -> MaterializeReport:
    """open_state, then the documents to `dest` and the report beside it (`<stem>.report.json`).

    An S3 destination is written to a local temporary file first and uploaded (multipart) when complete,
    so a failed run leaves no partial object.
    """
    dest_s3 = dest_s3 or s3
    with open_state(s3, target, sequence=sequence, as_of=as_of, keep_system_properties=keep_system_properties) as state:
        report = state.report
        payload = json.dumps({**report.to_dict(), "output": dest.url}, indent=2).encode()
        if dest.bucket is None:
            folder = os.path.dirname(os.path.abspath(dest.key))
            os.makedirs(folder, exist_ok=True)
            partial = f"{dest.key}.partial"
            try:
                with open(partial, "wb") as out:
                    write_jsonl(state, out, dest.compression)
                os.replace(partial, dest.key)
            except BaseException:
                _remove(partial, False)  # never a half-written state under the final name, nor a leftover
                raise
            with open(dest.report_key, "wb") as out:
                out.write(payload)
            return report
        with tempfile.TemporaryDirectory(prefix="cosmos-materialize-out-") as tmp:
            local = os.path.join(tmp, "state")
            with open(local, "wb") as out:
                write_jsonl(state, out, dest.compression)
            try:
                dest_s3.upload_file(local, dest.bucket, dest.key)
                dest_s3.put_object(
                    Bucket=dest.bucket, Key=dest.report_key, Body=payload, ContentType="application/json"
                )
            except (ClientError, BotoCoreError) as e:
                raise MaterializeError(
                    f"cannot write {dest.url}: {e}. The identity needs s3:PutObject there "
                    f"(materializing into the export prefix is not allowed for the export "
                    f"role: pick another prefix or a local path)"
                ) from None
        return report
