"""Commit protocol: parts -> manifest -> checkpoint, with S3 conditional writes.

1. Parts are written under ``data/.../run=<run id>/`` (sink.py).
2. The manifest is put at ``manifests/{sequence:010d}.json`` with
   ``If-None-Match: *``: a sequence number can be taken by exactly one run.
   This write *is* the commit.
3. The checkpoint is moved with ``If-Match: <etag it was loaded with>`` (or
   ``If-None-Match: *`` for the first), so it never goes backwards.

A run that dies between 2 and 3 has committed; the next ``load`` sees the
manifest at checkpoint.sequence + 1 and rolls the checkpoint forward to it.
A run that dies before 2 committed nothing: its parts are orphans, never read
(readers take only parts a manifest lists) and removed by ``cleanup_orphans``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cosmos_export import audit, contract, layout, storage
from cosmos_export.contract import MANIFEST_FORMAT_VERSION
from cosmos_export.schema import SchemaInfo, analytic_columns

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Mode = contract.ManifestMode
#: Parts whose last write is this close to a live run's start are never deleted (clock skew).
ORPHAN_SAFETY_MARGIN = timedelta(minutes=10)


class CheckpointError(RuntimeError):
    """The stored checkpoint (or a manifest) cannot be used; it is left untouched."""


class ConcurrentRunError(RuntimeError):
    """Another run committed the sequence this run wanted."""


class ManifestPart(BaseModel):
    """One completed part object, as the sink records it and the manifest lists it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str
    version_id: str | None
    bytes: int = Field(ge=0)
    uncompressed_bytes: int = Field(ge=0)
    documents: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    feed_range: str
    part_number: int = Field(ge=1)
    schema_version: int = Field(ge=0)


class PartitionKeyDefinition(BaseModel):
    """The container's partition key as Cosmos reports it (Hash: one path; MultiHash: up to 3, hierarchical)."""

    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(min_length=1, max_length=3)
    kind: Literal["Hash", "MultiHash", "Range"] = "Hash"
    #: 2 = large partition keys (hash of the whole value); absent on old containers (1).
    version: int | None = None
    #: Set on containers created without a partition key (the system-assigned /_partitionKey).
    systemKey: bool | None = None


class ContainerDefinition(BaseModel):
    """What a restore target must be declared with, as read from Cosmos at export time (container read).

    Field names are Cosmos's own, so a target's `container.read()` compares key by key. Indexing and
    unique-key policies are kept verbatim (Cosmos JSON); throughput, stored procedures, triggers, UDFs and
    role assignments are not part of it (a restore does not bring them back).
    """

    model_config = ConfigDict(extra="forbid")
    partitionKey: PartitionKeyDefinition
    indexingPolicy: dict[str, Any] | None = None
    #: Seconds; -1 = TTL on without a default; None = TTL off.
    defaultTtl: int | None = None
    uniqueKeyPolicy: dict[str, Any] | None = None

    @classmethod
    def of(cls, properties: dict[str, Any]) -> "ContainerDefinition":
        """From a container's properties (`ContainerProxy.read()`); unknown Cosmos fields are left out."""
        pk = properties.get("partitionKey") or {}
        return cls(
            partitionKey=PartitionKeyDefinition(**{k: pk[k] for k in PartitionKeyDefinition.model_fields if k in pk}),
            indexingPolicy=properties.get("indexingPolicy"),
            defaultTtl=properties.get("defaultTtl"),
            uniqueKeyPolicy=properties.get("uniqueKeyPolicy"),
        )

    def to_cosmos(self) -> dict[str, Any]:
        """Cosmos JSON (what `ContainerProxy.read()` returns for these fields), None fields left out."""
        return self.model_dump(mode="json", exclude_none=True)


class Manifest(BaseModel):
    format_version: int = MANIFEST_FORMAT_VERSION
    sequence: int = Field(default=0, ge=0, description="set by CommitStore.commit")
    run_id: str
    mode: Mode
    account: str
    database: str
    container: str
    started_at: datetime
    finished_at: datetime
    parts: list[ManifestPart]
    #: Continuation per feed range (key: the feed range's JSON), where the next run resumes.
    continuations: dict[str, str | None]
    schema_previous: SchemaInfo | None
    schema_: SchemaInfo = Field(alias="schema")
    timings: dict[str, float] = Field(default_factory=dict)
    #: Newest Cosmos `_ts` (epoch s) committed so far, this run or before (None: nothing yet); `status` and
    #: the LagSeconds metric measure lag from it. Optional, so manifests written before it still load.
    newest_ts: int | None = None
    #: Format 2 on (None in format 1 manifests): the container as read when the run started, the change-feed
    #: mode the run read (AllVersionsAndDeletes runs record deletes) and a query snapshot's WHERE filter
    #: (a filtered snapshot is not the container's full state).
    container_definition: ContainerDefinition | None = None
    change_feed_mode: contract.ChangeFeedMode | None = None
    query_filter: str | None = None
    #: Format 3 on: the top-level fields that are typed columns of the analytics tables, in DuckDB and
    #: Glue terms (`schema.analytic_columns` of `schema`); derived when an older manifest lacks it.
    columns: dict[str, dict[str, str]] | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _derive_columns(self) -> "Manifest":
        if self.columns is None:
            self.columns = analytic_columns(
                self.schema_.fields, change_records=self.change_feed_mode == "AllVersionsAndDeletes"
            )
        return self

    @property
    def documents(self) -> int:
        return sum(p.documents for p in self.parts)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.parts)


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    format_version: int = MANIFEST_FORMAT_VERSION
    account: str
    database: str
    container: str
    sequence: int = Field(ge=1)
    run_id: str
    mode: Mode
    manifest_key: str
    continuations: dict[str, str | None]
    schema_: SchemaInfo = Field(alias="schema")
    committed_at: datetime
    newest_ts: int | None = None  # copied from the manifest


#: Either stored document (both name their container, checked on load).
_Document = TypeVar("_Document", Manifest, Checkpoint)


@dataclass(frozen=True)
class LoadedState:
    checkpoint: Checkpoint | None
    etag: str | None

    @property
    def next_sequence(self) -> int:
        return (self.checkpoint.sequence if self.checkpoint else 0) + 1


def _dump(model: BaseModel) -> bytes:
    return model.model_dump_json(by_alias=True, indent=2).encode("utf-8")


class CommitStore:
    def __init__(self, s3_client: S3Client, target: layout.ExportTarget, log: audit.Logger | None = None) -> None:
        self._bucket = storage.Bucket(s3_client, target.bucket)
        self._target = target
        self._log = audit.as_logger(log, __name__)
        self._where = f"{target.account}/{target.database}/{target.container}"

    @property
    def target(self) -> layout.ExportTarget:
        return self._target

    # -- reading ---------------------------------------------------------

    def _get(self, key: str) -> tuple[bytes, str] | None:
        return self._bucket.get(key)

    def _parse(self, model: type[_Document], key: str, body: bytes, what: str) -> _Document:
        url = f"s3://{self._target.bucket}/{key}"
        try:
            raw = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(
                f"{what} {url} is not valid JSON ({exc}); it was left unchanged: restore a previous version "
                f"of it from the bucket's version history, or move it aside to start a new snapshot"
            ) from None
        version = raw.get("format_version") if isinstance(raw, dict) else None
        if isinstance(version, int) and version > MANIFEST_FORMAT_VERSION:
            raise CheckpointError(
                f"{what} {url} has format_version {version}, newer than this worker's "
                f"{MANIFEST_FORMAT_VERSION}; it was left unchanged: upgrade the worker image"
            )
        try:
            parsed = model.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
            raise CheckpointError(
                f"{what} {url} is not a valid {what} ({problems}); it was left unchanged: restore a previous "
                f"version of it from the bucket's version history, or move it aside to start a new snapshot"
            ) from None
        theirs = f"{parsed.account}/{parsed.database}/{parsed.container}"
        if theirs != self._where:
            raise CheckpointError(
                f"{what} {url} belongs to {theirs}, not {self._where}; it was left unchanged: check the "
                f"export prefix and container settings (each container needs its own prefix path)"
            )
        return parsed

    def _manifest(self, sequence: int) -> Manifest | None:
        key = layout.manifest_key(self._target, sequence)
        found = self._get(key)
        if found is None:
            return None
        manifest = self._parse(Manifest, key, found[0], "manifest")
        if manifest.sequence != sequence:
            raise CheckpointError(
                f"manifest s3://{self._target.bucket}/{key} says sequence {manifest.sequence}, its key says "
                f"{sequence}; it was left unchanged: restore the original object from the version history"
            )
        return manifest

    def load(self) -> LoadedState:
        """The committed state, after rolling the checkpoint forward to any manifest beyond it."""
        key = layout.checkpoint_key(self._target)
        while True:
            found = self._get(key)
            if found is None:
                state = LoadedState(None, None)
            else:
                state = LoadedState(self._parse(Checkpoint, key, found[0], "checkpoint"), found[1])
            manifest = self._manifest(state.next_sequence)
            if manifest is None:
                return state
            self._log.warning(
                "checkpoint_roll_forward",
                sequence=manifest.sequence,
                run_id=manifest.run_id,
                reason="a previous run committed its manifest but stopped before moving the checkpoint",
            )
            try:
                self._put_checkpoint(state, manifest)
            except ClientError as exc:
                if not storage.is_precondition_failed(exc):
                    raise
            # Re-read either way: someone else may have rolled forward concurrently.

    def committed_manifests(self) -> list[Manifest]:
        manifests = []
        for key in self._list(self._target.manifests_prefix):
            name = key.rsplit("/", 1)[-1]
            if not (name.endswith(".json") and name[:-5].isdigit()):
                continue
            manifest = self._manifest(int(name[:-5]))
            if manifest is not None:
                manifests.append(manifest)
        return sorted(manifests, key=lambda m: m.sequence)

    def _list(self, prefix: str) -> list[str]:
        return [obj.key for obj in self._bucket.objects(prefix)]

    # -- writing ---------------------------------------------------------

    def _put_checkpoint(self, state: LoadedState, manifest: Manifest) -> tuple[Checkpoint, str]:
        checkpoint = Checkpoint(
            account=manifest.account,
            database=manifest.database,
            container=manifest.container,
            sequence=manifest.sequence,
            run_id=manifest.run_id,
            mode=manifest.mode,
            manifest_key=layout.manifest_key(self._target, manifest.sequence),
            continuations=manifest.continuations,
            schema_=manifest.schema_,
            committed_at=datetime.now(timezone.utc),
            newest_ts=manifest.newest_ts,
        )
        key, body = layout.checkpoint_key(self._target), _dump(checkpoint)
        if state.etag:
            etag = self._bucket.put_if_match(key, body, "application/json", state.etag)
        else:
            etag = self._bucket.put_if_absent(key, body, "application/json")
        return checkpoint, etag

    def commit(self, loaded: LoadedState, manifest: Manifest) -> Checkpoint:
        sequence = loaded.next_sequence
        if (manifest.account, manifest.database, manifest.container) != (
            self._target.account,
            self._target.database,
            self._target.container,
        ):
            raise ValueError(
                f"manifest is for {manifest.account}/{manifest.database}/{manifest.container}, "
                f"this store is for {self._where}: build the manifest from the same ExportTarget"
            )
        manifest = manifest.model_copy(update={"sequence": sequence})
        key = layout.manifest_key(self._target, sequence)
        try:
            self._bucket.put_if_absent(key, _dump(manifest), "application/json")
        except ClientError as exc:
            if not storage.is_precondition_failed(exc):
                raise
            # botocore retries a PUT whose response was lost; if the first attempt was applied, the
            # retry's If-None-Match fails on our own manifest. Only another run's manifest is a lost race.
            stored = self._manifest(sequence)
            if stored is None or stored.run_id != manifest.run_id:
                raise ConcurrentRunError(self._lost_message(sequence, manifest.run_id)) from None
            self._log.warning(
                "manifest_already_written",
                sequence=sequence,
                run_id=manifest.run_id,
                reason="the manifest PUT was applied but its response was lost; the retry saw our own manifest",
            )
        # Committed. Moving the checkpoint is bookkeeping: if it fails, the next load rolls forward.
        try:
            checkpoint, _ = self._put_checkpoint(loaded, manifest)
        except ClientError as exc:
            if not storage.is_precondition_failed(exc):
                raise
            current = self.load().checkpoint  # someone rolled forward to our manifest, or beyond
            if current is None or current.sequence < sequence:
                raise
            checkpoint = current
        self._log.info(
            "run_committed",
            sequence=sequence,
            run_id=manifest.run_id,
            manifest_key=key,
            documents=manifest.documents,
            bytes=manifest.bytes,
            parts=len(manifest.parts),
        )
        return checkpoint

    def _lost_message(self, sequence: int, run_id: str) -> str:
        return (
            f"another export run committed sequence {sequence} for {self._where} first; run {run_id}'s parts "
            f"are left uncommitted and will be cleaned up; rerun to export the remaining changes"
        )

    # -- cleanup ---------------------------------------------------------

    def cleanup_orphans(self, keep_run_ids: set[str] | list[str] | tuple[str, ...]) -> list[str]:
        """Delete parts of runs no committed manifest references.

        Only runs older than the oldest of ``keep_run_ids`` (the live run) are
        touched, and only objects last written before that run started: a run
        that is still writing loaded its state after that and cannot be deleted
        from under itself. Also aborts those runs' unfinished multipart uploads.
        """
        keep = set(keep_run_ids)
        if not keep:
            raise ValueError("keep_run_ids is empty: pass at least the current run's id")
        cutoff = min(layout.run_started_at(r) for r in keep) - ORPHAN_SAFETY_MARGIN
        committed = {m.run_id for m in self.committed_manifests()} | keep

        def orphan(key: str) -> bool:
            run_id = layout.run_id_of_key(key)
            return run_id is not None and run_id not in committed and layout.run_started_at(run_id) < cutoff

        deleted: list[str] = []
        batch: list[str] = []
        for obj in self._bucket.objects(self._target.data_prefix):
            if orphan(obj.key) and obj.last_modified < cutoff:
                batch.append(obj.key)
            if len(batch) == 1000:  # DeleteObjects' limit
                self._delete_orphans(batch, deleted)
        self._delete_orphans(batch, deleted)
        for upload in self._bucket.uploads(self._target.data_prefix):
            if orphan(upload.key) and upload.initiated < cutoff:
                self._bucket.abort_upload(upload.key, upload.upload_id)
        for key in deleted:
            self._log.info("orphan_part_deleted", key=key, run_id=layout.run_id_of_key(key))
        return deleted

    def delete_unlisted(self, run_id: str, listed: set[str]) -> list[str]:
        """After `run_id` committed: delete its parts the manifest does not list (a killed fan-out shard
        attempt's) and abort its open uploads; the same batching as cleanup_orphans."""
        deleted: list[str] = []
        batch: list[str] = []
        for obj in self._bucket.objects(self._target.data_prefix):
            if layout.run_id_of_key(obj.key) == run_id and obj.key not in listed:
                batch.append(obj.key)
            if len(batch) == 1000:  # DeleteObjects' limit
                self._delete_orphans(batch, deleted)
        self._delete_orphans(batch, deleted)
        for upload in self._bucket.uploads(self._target.data_prefix):
            if layout.run_id_of_key(upload.key) == run_id:
                self._bucket.abort_upload(upload.key, upload.upload_id)
        return deleted

    def _delete_orphans(self, batch: list[str], deleted: list[str]) -> None:
        if batch:
            failed = self._bucket.delete_many(batch)
            if failed:
                key, code, message = failed[0]
                raise RuntimeError(f"deleting orphan part {key} failed: {code} {message}")
            deleted.extend(batch)
            batch.clear()
