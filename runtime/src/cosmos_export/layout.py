"""Where everything of one export lives in the bucket.

    {prefix}/{account}/{database}/{container}/
        data/dt=YYYY-MM-DD/run={run_id}/range={idx:04d}/part-{n:05d}.jsonl.gz|.jsonl.zst
        manifests/{sequence:010d}.json
        checkpoint.json

``dt`` is the run's start date (UTC), so one run's parts share one partition.
Readers take only the parts a manifest lists; anything else under ``data/`` is
an uncommitted run's leftover.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from cosmos_export import contract, jsonl

RUN_ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
_RUN_IN_KEY = re.compile(r"/run=(\d{8}T\d{6}Z-[0-9a-f]{8})/")


@dataclass(frozen=True)
class ExportTarget:
    bucket: str
    prefix: str
    account: str
    database: str
    container: str

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("bucket is empty: set the export bucket name")
        parts = [p for p in self.prefix.strip("/").split("/") if p] if self.prefix else []
        # The same rules the stack config and the worker settings apply (contract.py).
        checks = (
            ("account", contract.cosmos_account_problem),
            ("database", contract.cosmos_id_problem),
            ("container", contract.cosmos_id_problem),
        )
        for name, problem_of in checks:
            value = getattr(self, name)
            problem = problem_of(value)
            if problem:
                raise ValueError(f"{name}={value!r} cannot be used in an S3 key: it {problem}")
        for part in parts:
            if part in (".", ".."):
                raise ValueError(f"prefix={self.prefix!r} has a '{part}' segment: use a plain path like 'exports'")

    @property
    def container_prefix(self) -> str:
        prefix = self.prefix.strip("/")
        tail = f"{self.account}/{self.database}/{self.container}"
        return f"{prefix}/{tail}" if prefix else tail

    @property
    def data_prefix(self) -> str:
        return f"{self.container_prefix}/data/"

    @property
    def manifests_prefix(self) -> str:
        return f"{self.container_prefix}/manifests/"


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError(f"started_at={dt.isoformat()} has no time zone: pass an aware UTC datetime")
    return dt.astimezone(timezone.utc)


def part_key(
    target: ExportTarget,
    *,
    run_id: str,
    started_at: datetime,
    feed_range_index: int,
    part_number: int,
    compression: jsonl.Compression,
) -> str:
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(f"run_id={run_id!r} is not a run id: expected YYYYMMDDTHHMMSSZ-<8 hex> (new_run_id())")
    if not 0 <= feed_range_index <= 9999:
        raise ValueError(f"feed_range_index={feed_range_index} is out of range 0..9999")
    if not 1 <= part_number <= 99999:
        raise ValueError(f"part_number={part_number} is out of range 1..99999")
    day = _utc(started_at).strftime("%Y-%m-%d")
    return (
        f"{target.container_prefix}/data/dt={day}/run={run_id}/range={feed_range_index:04d}/"
        f"part-{part_number:05d}{jsonl.suffix(compression)}"
    )


def manifest_key(target: ExportTarget, sequence: int) -> str:
    if not 1 <= sequence <= 9_999_999_999:
        raise ValueError(f"sequence={sequence} is out of range 1..9999999999")
    return f"{target.container_prefix}/manifests/{sequence:010d}.json"


def checkpoint_key(target: ExportTarget) -> str:
    return f"{target.container_prefix}/checkpoint.json"


def new_run_id(now: datetime) -> str:
    return f"{_utc(now).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


def run_started_at(run_id: str) -> datetime:
    """The start time encoded in a run id."""
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(f"run_id={run_id!r} is not a run id: expected YYYYMMDDTHHMMSSZ-<8 hex>")
    return datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


def run_id_of_key(key: str) -> str | None:
    match = _RUN_IN_KEY.search(key)
    return match.group(1) if match else None


# --- analytics tables (tables.py writes them; the Glue catalog points at them) --------------------
#
#     {container prefix}/tables/current/v={sequence:010d}/part-{n:05d}.parquet
#     {container prefix}/tables/current/_symlink/manifest       (the pointer: one s3:// URL a line)
#     {container prefix}/tables/changes/dt=YYYY-MM-DD/sequence={sequence:010d}.parquet

#: The fixed columns of both tables as (name, Glue type); the current state adds promoted fields after them.
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "string"),
    ("_partition_key", "string"),
    ("_sequence", "bigint"),
    ("_ts", "bigint"),
    ("document", "string"),
)
#: The change log's columns after TABLE_COLUMNS (its partition, `dt`, is in the key, not in the files).
CHANGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_run_id", "string"),
    ("_mode", "string"),
    ("_operation", "string"),
    ("_lsn", "bigint"),
    ("_deleted", "boolean"),
)


def current_root(container_prefix: str) -> str:
    return f"{container_prefix}/tables/current/"


def current_version_prefix(container_prefix: str, sequence: int) -> str:
    return f"{current_root(container_prefix)}v={sequence:010d}/"


def current_pointer_prefix(container_prefix: str) -> str:
    """The Glue table's location (SymlinkTextInputFormat reads every manifest file under it)."""
    return f"{current_root(container_prefix)}_symlink/"


def current_pointer_key(container_prefix: str) -> str:
    return f"{current_pointer_prefix(container_prefix)}manifest"


def changes_root(container_prefix: str) -> str:
    return f"{container_prefix}/tables/changes/"


def changes_key(container_prefix: str, started_at: datetime, sequence: int) -> str:
    return f"{changes_root(container_prefix)}dt={_utc(started_at):%Y-%m-%d}/sequence={sequence:010d}.parquet"
