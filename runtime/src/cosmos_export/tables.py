"""Analytics tables over the committed export: Parquet that DuckDB, Athena and Glue read where it lies.

    {container prefix}/tables/
        current/v={sequence:010d}/part-{n:05d}.parquet   one row per live document at that sequence
        current/_symlink/manifest                          the S3 URLs of the current version's files
        changes/dt=YYYY-MM-DD/sequence={sequence:010d}.parquet   every version one committed run exported

**Current state.** Rebuilt from the committed manifests by `materialize.open_state` (the one home of
the last-write-wins and delete rules), into a new versioned prefix; then the pointer
(`_symlink/manifest`, a Hive SymlinkTextInputFormat manifest: one `s3://` URL a line) is replaced
in one PUT. A reader (Athena through the Glue table, DuckDB through the pointer) sees the previous
version whole or the new one whole, never a half-written one. The version before the current one is
kept (a query that read the old pointer can finish); older ones are deleted.

**Change log.** One file per committed run, written only from committed manifests (so never a row
of a killed run's parts), after the manifest: a run whose refresh did not happen gets its file from
the next refresh. `dt` is the run's start date (as in `data/`), the partition Athena projects.

Columns of both: `id`, `_partition_key` (JSON text of the partition key values, `{}` = undefined),
`_sequence`, `_ts`, `document` (the JSON text as exported). The current state adds the top-level
fields `schema.analytic_columns` finds stably typed (the manifest's `columns`); the change log keeps
a fixed schema (its files span schema versions) and adds `_run_id`, `_mode`, `_operation` and `_lsn`
(AllVersionsAndDeletes) and `_deleted`.

Memory stays flat: documents stream from the SQLite overlay in batches of `BATCH` rows into a
Parquet writer on local disk (rolled every `ROWS_PER_FILE` rows) and are uploaded file by file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from boto3.s3.transfer import TransferConfig

from cosmos_export import audit, layout, materialize, sdk_json, storage
from cosmos_export.commit import CheckpointError, CommitStore, Manifest

#: Rows per Arrow batch (one row group each): about 10 MB of ~1 KB documents.
BATCH = 10_000
#: Rows per Parquet file: a file stays below a few hundred MB and readers split the work by file.
ROWS_PER_FILE = 250_000

#: Two 16 MB parts in flight: boto3's default (10 threads x 8 MB) costs ~80 MB of RSS for no gain here.
_TRANSFER = TransferConfig(max_concurrency=2, multipart_chunksize=16 << 20)

_VERSION = re.compile(r"/current/v=(\d{10})/")

_GLUE_ARROW = {"string": pa.string(), "bigint": pa.int64(), "double": pa.float64(), "boolean": pa.bool_()}
#: Columns every current-state row has (layout.py, which the Glue tables are declared from); a document field
#: of the same name (any case) stays in `document`.
CURRENT_FIXED = pa.schema([(name, _GLUE_ARROW[glue]) for name, glue in layout.TABLE_COLUMNS])
CHANGES_SCHEMA = pa.schema([(name, _GLUE_ARROW[glue]) for name, glue in layout.TABLE_COLUMNS + layout.CHANGE_COLUMNS])
_ARROW = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_()}
_INT64 = (-(1 << 63), (1 << 63) - 1)


def current_root(target: layout.ExportTarget) -> str:
    return layout.current_root(target.container_prefix)


def version_prefix(target: layout.ExportTarget, sequence: int) -> str:
    return layout.current_version_prefix(target.container_prefix, sequence)


def pointer_key(target: layout.ExportTarget) -> str:
    return layout.current_pointer_key(target.container_prefix)


def changes_root(target: layout.ExportTarget) -> str:
    return layout.changes_root(target.container_prefix)


def changes_key(target: layout.ExportTarget, manifest: Manifest) -> str:
    return layout.changes_key(target.container_prefix, manifest.started_at, manifest.sequence)


# --- typed columns -------------------------------------------------------------------


def promoted_columns(columns: dict[str, dict[str, str]] | None) -> list[tuple[str, str]]:
    """(field, DuckDB type) of the typed columns, in name order; names that collide (case-insensitively, as
    Glue and Athena compare them) with a fixed column, a system property or each other stay in JSON only."""
    reserved = {name.lower() for name in CURRENT_FIXED.names} | {p.lower() for p in materialize.SYSTEM_PROPERTIES}
    names = sorted(columns or {})
    lowered = [n.lower() for n in names]
    return [
        (name, (columns or {})[name]["duckdb"])
        for name, low in zip(names, lowered)
        if low not in reserved and lowered.count(low) == 1 and (columns or {})[name]["duckdb"] in _ARROW
    ]


def current_schema(columns: dict[str, dict[str, str]] | None) -> pa.Schema:
    fields = list(CURRENT_FIXED) + [pa.field(name, _ARROW[t]) for name, t in promoted_columns(columns)]
    return pa.schema(fields)


def _typed(value: Any, duck: str) -> Any:
    """The value as the column's type, or None when it is not (it stays exact in `document`)."""
    kind = type(value)
    if duck == "VARCHAR":
        return value if kind is str else None
    if duck == "BOOLEAN":
        return value if kind is bool else None
    if duck == "BIGINT":
        return value if kind is int and _INT64[0] <= value <= _INT64[1] else None
    if duck == "DOUBLE":
        if kind is float or (kind is int and abs(value) < 1 << 1023):
            return float(value)
        return None
    return None


def _ts(doc: dict) -> int | None:
    ts = doc.get("_ts")
    return ts if type(ts) is int and _INT64[0] <= ts <= _INT64[1] else None


def _pk_text(values: list[Any]) -> str:
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


# --- writing Parquet ---------------------------------------------------------------


class _RollingWriter:
    """Parquet files of at most ROWS_PER_FILE rows in `directory`, written batch by batch."""

    def __init__(self, directory: str, schema: pa.Schema, rows_per_file: int = ROWS_PER_FILE) -> None:
        self.directory, self.schema, self.rows_per_file = directory, schema, rows_per_file
        self.files: list[str] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._in_file = 0
        self._columns: dict[str, list[Any]] = {name: [] for name in schema.names}

    def add(self, row: dict[str, Any]) -> None:
        for name, values in self._columns.items():
            values.append(row.get(name))
        if len(self._columns["id"]) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        count = len(self._columns["id"])
        if not count:
            return
        if self._writer is None or self._in_file >= self.rows_per_file:
            self._open()
        batch = pa.RecordBatch.from_pydict(self._columns, schema=self.schema)
        assert self._writer is not None
        self._writer.write_batch(batch)
        self._in_file += count
        self.rows += count
        for values in self._columns.values():
            values.clear()

    def _open(self) -> None:
        if self._writer is not None:
            self._writer.close()
        path = os.path.join(self.directory, f"part-{len(self.files):05d}.parquet")
        self._writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.files.append(path)
        self._in_file = 0

    def close(self) -> list[str]:
        """Flush and close; at least one file (an empty table is a file with no rows)."""
        self._flush()
        if self._writer is None:
            self._open()
        assert self._writer is not None
        self._writer.close()
        return self.files


def write_current(state: materialize.MaterializedState, directory: str, columns: dict | None) -> tuple[list[str], int]:
    """The state as current-state Parquet files in `directory`; (file paths, rows)."""
    typed = promoted_columns(columns)
    writer = _RollingWriter(directory, current_schema(columns))
    for partition_key, doc_id, sequence, body in state.rows():
        text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
        doc = sdk_json.loads(body)
        row = {
            "id": doc_id,
            "_partition_key": _pk_text(partition_key),
            "_sequence": sequence,
            "_ts": _ts(doc),
            "document": text,
        }
        for name, duck in typed:
            if name in doc:
                row[name] = _typed(doc[name], duck)
        writer.add(row)
    return writer.close(), writer.rows


def change_rows(s3: Any, target: layout.ExportTarget, manifest: Manifest, paths: list[str]) -> Iterator[dict]:
    """Every record of a committed run's parts (each part verified against its manifest while read)."""
    changes, detect = materialize.change_flags(manifest)
    for part in manifest.parts:
        for line in materialize.part_lines(s3, target, manifest, part):
            rec = materialize.decode_record(line, paths, changes, detect, part)
            doc = sdk_json.loads(rec.body) if rec.body is not None else {}
            yield {
                "id": rec.id,
                "_partition_key": _pk_text(rec.partition_key),
                "_sequence": manifest.sequence,
                "_ts": _ts(doc),
                "document": rec.body.decode("utf-8") if rec.body is not None else None,
                "_run_id": manifest.run_id,
                "_mode": manifest.mode,
                "_operation": rec.operation,
                "_lsn": rec.lsn if rec.lsn >= 0 else None,
                "_deleted": rec.body is None,
            }


# --- refresh ---------------------------------------------------------------------------


@dataclass
class RefreshReport:
    container: str
    #: The sequence the current-state table is at after the refresh (None: no committed run yet).
    sequence: int | None = None
    current_written: bool = False
    documents: int = 0
    files: list[str] = field(default_factory=list)
    pointer: str | None = None
    #: Change-log files written by this refresh (sequences).
    changes_written: list[int] = field(default_factory=list)
    versions_deleted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _upload(s3: Any, path: str, bucket: str, key: str, kms_key_arn: str | None) -> None:
    extra: dict[str, Any] = {"ContentType": "application/vnd.apache.parquet"}
    if kms_key_arn:
        # upload_file takes no BucketKeyEnabled: the bucket's default encryption sets the bucket key.
        extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_arn)
    s3.upload_file(path, bucket, key, ExtraArgs=extra, Config=_TRANSFER)


def pointer_version(s3: Any, target: layout.ExportTarget) -> int | None:
    """The version (sequence) the pointer names, None when there is no pointer yet."""
    got = storage.Bucket(s3, target.bucket).get(pointer_key(target))
    if got is None:
        return None
    match = _VERSION.search(got[0].decode("utf-8"))
    return int(match.group(1)) if match else None


def refresh(
    s3: Any,
    target: layout.ExportTarget,
    *,
    kms_key_arn: str | None = None,
    log: Any = None,
    workdir: str | None = None,
) -> RefreshReport:
    """Bring both tables of `target` up to its latest committed sequence (a no-op when they are)."""
    log = audit.as_logger(log, __name__)
    report = RefreshReport(container=target.container)
    try:
        manifests = CommitStore(s3, target).committed_manifests()
    except CheckpointError as e:
        raise materialize.MaterializeError(str(e)) from None
    if not manifests:
        return report
    where = f"s3://{target.bucket}/{target.manifests_prefix}"
    definition, _ = materialize.definition_of(manifests[-1:], manifests, where)
    paths = definition["partitionKey"]["paths"]
    bucket = storage.Bucket(s3, target.bucket)
    with tempfile.TemporaryDirectory(prefix="cosmos-tables-", dir=workdir) as tmp:
        have = {obj.key for obj in bucket.objects(changes_root(target))}
        for manifest in manifests:
            key = changes_key(target, manifest)
            if key in have:
                continue
            writer = _RollingWriter(tmp, CHANGES_SCHEMA, rows_per_file=1 << 62)
            for row in change_rows(s3, target, manifest, paths):
                writer.add(row)
            [path] = writer.close()
            _upload(s3, path, target.bucket, key, kms_key_arn)
            os.remove(path)
            report.changes_written.append(manifest.sequence)
        latest = manifests[-1]
        current = pointer_version(s3, target)
        report.sequence = latest.sequence
        if current != latest.sequence:
            written = write_current_to_s3(
                s3, target, tmp, kms_key_arn=kms_key_arn, sequence=latest.sequence, columns=latest.columns
            )
            report.current_written, report.documents, report.files = True, written[1], written[0]
            report.pointer = f"s3://{target.bucket}/{pointer_key(target)}"
            report.versions_deleted = _delete_old_versions(bucket, target, keep={latest.sequence, current})
    log.info("tables_refreshed", **report.to_dict())
    return report


def write_current_to_s3(
    s3: Any,
    target: layout.ExportTarget,
    tmp: str,
    *,
    kms_key_arn: str | None,
    sequence: int,
    columns: dict | None,
) -> tuple[list[str], int]:
    """Write version `sequence` of the current-state table (typed `columns`: that manifest's), then point the
    pointer at it; (URLs, rows)."""
    with materialize.open_state(s3, target, sequence=sequence, keep_system_properties=True, workdir=tmp) as state:
        files, rows = write_current(state, tmp, columns)
    prefix = version_prefix(target, sequence)
    urls = []
    for path in files:
        key = prefix + os.path.basename(path)
        _upload(s3, path, target.bucket, key, kms_key_arn)
        os.remove(path)
        urls.append(f"s3://{target.bucket}/{key}")
    # The switch: one PUT replaces the pointer; readers see the old version or this one, whole.
    storage.Bucket(s3, target.bucket).put(
        pointer_key(target),
        "".join(f"{u}\n" for u in urls).encode(),
        content_type="text/plain",
        kms_key_arn=kms_key_arn,
    )
    return urls, rows


def _point_columns(s3: Any, target: layout.ExportTarget, sequence: int) -> dict | None:
    """The typed columns of the manifest at `sequence` (the schema as of the state's point)."""
    manifest = next((m for m in CommitStore(s3, target).committed_manifests() if m.sequence == sequence), None)
    return manifest.columns if manifest else None


def _delete_old_versions(bucket: storage.Bucket, target: layout.ExportTarget, keep: set[int | None]) -> int:
    old = []
    for obj in bucket.objects(current_root(target)):
        match = _VERSION.search(obj.key)
        if match and int(match.group(1)) not in keep:
            old.append(obj.key)
    if old:
        bucket.delete_many(old)
    return len(old)


# --- on demand (materialize --format parquet) ------------------------------------------


def materialize_parquet(
    s3: Any,
    target: layout.ExportTarget,
    dest: str,
    *,
    sequence: int | None = None,
    as_of: Any = None,
    dest_s3: Any = None,
) -> tuple[materialize.MaterializeReport, list[str]]:
    """The state at `sequence`/`as_of` as current-state Parquet files under `dest` (a folder or s3://bucket/prefix/)."""
    dest_s3 = dest_s3 or s3
    with tempfile.TemporaryDirectory(prefix="cosmos-tables-") as tmp:
        with materialize.open_state(
            s3, target, sequence=sequence, as_of=as_of, keep_system_properties=True, workdir=tmp
        ) as state:
            columns = _point_columns(s3, target, state.report.sequence)
            files, _ = write_current(state, tmp, columns)
            report = state.report
        out = []
        if dest.startswith("s3://"):
            bucket, _, prefix = dest[5:].partition("/")
            if prefix and not prefix.endswith("/"):
                prefix += "/"
            for path in files:
                key = prefix + os.path.basename(path)
                dest_s3.upload_file(path, bucket, key)
                out.append(f"s3://{bucket}/{key}")
        else:
            os.makedirs(dest, exist_ok=True)
            for path in files:
                final = os.path.join(dest, os.path.basename(path))
                os.replace(path, final)
                out.append(final)
    return report, out


def after_commit(s3: Any, target: layout.ExportTarget, kms_key_arn: str | None, log: Any) -> RefreshReport | None:
    """The refresh a committed run does (EXPORT_CURRENT_STATE). The run is committed whatever happens here:
    a failure is logged (`tables_refresh_failed`, with the reason) and the next run's refresh catches up."""
    try:
        return refresh(s3, target, kms_key_arn=kms_key_arn, log=log)
    except Exception as e:  # the backup is committed; a stale table must not fail the run
        log.error("tables_refresh_failed", reason=f"{type(e).__name__}: {e}", container=target.container)
        return None
