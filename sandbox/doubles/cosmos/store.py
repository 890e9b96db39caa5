"""In-memory data model of the Cosmos gateway double.

A container is a set of physical partition key ranges covering the effective
partition key (EPK) space ["", "FF"). Each range owns the documents whose V2
EPK (MurmurHash3-128 of the SDK's own binary encoding) falls in it, keeps its
own LSN counter like a real physical partition, and stores every document as
serialized JSON bytes so a million ~1 KB documents stay affordable.
Documents are kept in LSN order (an upsert moves a document to the end), which
is exactly the order the LatestVersion change feed returns them in.
"""

from __future__ import annotations

import base64
import bisect
import functools
import io
import itertools
import json
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from azure.cosmos._base import ParsePaths
from azure.cosmos.partition_key import PartitionKey, _to_hex_encoded_binary_string_v1, _Undefined

try:  # C MurmurHash3; checked against the SDK's pure-Python EPK in the tests.
    import mmh3
except ImportError:  # pragma: no cover - still correct, only ~20x slower
    mmh3 = None  # type: ignore[assignment]  # the pure-Python fallback checks for None

MIN_EPK = ""
MAX_EPK = "FF"
# V2 hashing clears the two top bits of the first byte, so every EPK is below 0x40...
_EPK_SPACE_END = 0x40 << 120
_UNDEFINED = _Undefined()
_V1_SPACE = 1 << 32  # V1 hashes are unsigned 32-bit MurmurHash3 values


def effective_partition_key(value: Any) -> str:
    """The V2 (Hash kind) effective partition key the SDK computes for `value`."""
    if mmh3 is None:
        return PartitionKey._get_effective_partition_key_for_hash_partitioning_v2([value])
    buf = io.BytesIO()
    PartitionKey._write_for_hashing_v2(value, buf)  # the SDK's own binary encoding
    digest = bytearray(mmh3.hash128(buf.getvalue(), 0, True, signed=False).to_bytes(16, "little"))
    digest.reverse()
    digest[0] &= 0x3F
    return digest.hex().upper()


def _epk_to_int(epk: str) -> int:
    if epk == MAX_EPK:
        return _EPK_SPACE_END
    return int(epk.ljust(32, "0")[:32], 16) if epk else 0


def _int_to_epk(value: int) -> str:
    text = f"{value:032X}"
    while text.endswith("00") and len(text) > 2:
        text = text[:-2]
    return text


def even_boundaries(count: int) -> list[str]:
    """`count` ranges splitting the populated EPK space evenly, like a new container."""
    inner = [_int_to_epk(_EPK_SPACE_END * i // count) for i in range(1, count)]
    return [MIN_EPK, *inner, MAX_EPK]


@functools.lru_cache(maxsize=256)
def path_parts(path: str) -> tuple[str, ...]:
    """The property names of a partition key path, quoted segments ('/"a/b"/c') parsed as the SDK does."""
    return tuple(ParsePaths([path]))


def even_boundaries_v1(count: int) -> list[str]:
    """Even ranges for Hash V1, whose EPKs all start with the encoded 32-bit hash (so "05..."): the bounds
    are the SDK's own encoding of evenly spaced hash values."""
    inner = [str(_to_hex_encoded_binary_string_v1([float(_V1_SPACE * i // count)])).upper() for i in range(1, count)]
    return [MIN_EPK, *inner, MAX_EPK]


def partition_key_value(doc: dict, path: str) -> Any:
    """The document's partition key value at `path` (e.g. "/pk" or "/a/b"); missing -> Undefined."""
    node: Any = doc
    for part in path_parts(path):
        if not isinstance(node, dict) or part not in node:
            return _UNDEFINED
        node = node[part]
    return node


def pk_key(value: Any) -> str:
    """Canonical text of a single-path partition key value (dictionary key with the id)."""
    return components_key([value])


def components_key(components: list) -> str:
    """Canonical text of a partition key's components (Undefined as {}, like the wire format)."""
    return json.dumps([{} if isinstance(c, _Undefined) else c for c in components], separators=(",", ":"))


def parse_pk_header(header: str) -> list:
    """Components of an `x-ms-documentdb-partitionkey` header (a JSON list; {} is Undefined)."""
    try:
        parsed = json.loads(header)
    except ValueError as exc:
        raise ValueError(f"x-ms-documentdb-partitionkey {header!r} is not JSON") from exc
    if not isinstance(parsed, list) or not parsed:
        raise ValueError(f"x-ms-documentdb-partitionkey {header!r} must be a non-empty JSON list of values")
    for value in parsed:
        if isinstance(value, list) or (isinstance(value, dict) and value):
            raise ValueError(
                f"x-ms-documentdb-partitionkey {header!r}: a partition key value must be a string, number, "
                "boolean, null or {} (undefined), not an array or object"
            )
    return [_UNDEFINED if value == {} else value for value in parsed]


#: Partition key kinds and versions the double hashes as the SDK does (Hash V1 is the legacy scheme).
PK_KINDS = {("Hash", 1), ("Hash", 2), ("MultiHash", 2)}
MAX_PK_PATHS = 3


def _epk_v1(components: list) -> str:
    # The SDK sends V1 EPKs upper-cased (as the service compares them); its helper returns lower case.
    return str(PartitionKey._get_effective_partition_key_for_hash_partitioning(components)).upper()


def _rid(*parts: bytes) -> str:
    return base64.b64encode(b"".join(parts)).decode().replace("/", "-")


@dataclass(slots=True)
class Entry:
    lsn: int
    seq: int  # creation order, stable across upserts: query paging order
    epk: str
    ts: int
    body: bytes  # the document as stored, with _rid/_self/_etag/_attachments/_ts, no _lsn
    created: bool = field(default=False, compare=False)  # this write created the document
    ttl: int | None = None  # the document's own `ttl` (seconds; -1 never), None when it has none


@dataclass
class Version:
    """One change for the AllVersionsAndDeletes feed."""

    lsn: int
    epk: str
    ts: int
    operation: str  # create | replace | delete
    body: bytes | None  # current image (None for delete)
    previous_lsn: int | None
    id: str
    pk: str
    ttl_expired: bool = False  # a delete done by TTL expiry, not by a client


@dataclass
class PhysicalRange:
    id: str
    min: str
    max: str
    parents: list[str]
    lsn: int = 0
    docs: "OrderedDict[tuple[str, str], Entry]" = field(default_factory=OrderedDict)
    versions: list[Version] = field(default_factory=list)
    _by_lsn: list[Entry] | None = None
    _lsns: list[int] | None = None
    _by_seq: list[Entry] | None = None

    def contains(self, epk: str) -> bool:
        return self.min <= epk and (self.max == MAX_EPK or epk < self.max)

    def touch(self) -> None:
        self._by_lsn = self._lsns = self._by_seq = None

    def entries_after(self, lsn: int) -> Iterator[Entry]:
        """Entries with an LSN above `lsn`, in LSN order; an iterator, not a copy of the tail
        (a page reads ~1000 of them, a copy would cost O(range size) per page)."""
        if self._by_lsn is None:
            self._by_lsn = list(self.docs.values())
            self._lsns = [e.lsn for e in self._by_lsn]
        assert self._lsns is not None  # built together with _by_lsn
        return itertools.islice(self._by_lsn, bisect.bisect_right(self._lsns, lsn), None)

    def entries_by_seq(self) -> list[Entry]:
        if self._by_seq is None:
            self._by_seq = sorted(self.docs.values(), key=lambda e: e.seq)
        return self._by_seq

    def as_resource(self, collection_rid: str) -> dict:
        return {
            "id": self.id,
            "_rid": f"{collection_rid}{self.id}",
            "_etag": f'"{self.id}-{self.min}"',
            "minInclusive": self.min,
            "maxExclusive": self.max,
            "ridPrefix": int(self.id),
            "_self": f"pkranges/{self.id}/",
            "throughputFraction": 1.0,
            "status": "online",
            "parents": list(self.parents),
            "_ts": int(time.time()),
            "_lsn": self.lsn,
        }


class RangeGoneError(Exception):
    def __init__(self, range_id: str):
        super().__init__(f"partition key range {range_id} is gone (split)")
        self.range_id = range_id


class Container:
    """One container's ranges, documents and pkranges change feed."""

    def __init__(
        self,
        database: "Database",
        container_id: str,
        partition_key_path: str | list[str],
        feed_ranges: int,
        number: int,
        *,
        kind: str | None = None,
        version: int = 2,
    ):
        paths = [partition_key_path] if isinstance(partition_key_path, str) else list(partition_key_path)
        kind = kind or ("MultiHash" if len(paths) > 1 else "Hash")
        self.check_partition_key(paths, kind, version)
        if feed_ranges < 1:
            raise ValueError(f"feed_ranges={feed_ranges} must be at least 1")
        self.database = database
        self.id = container_id
        self.partition_key_paths = paths
        self.partition_key_path = paths[0]
        self.partition_key_kind = kind
        self.partition_key_version = version
        #: Extra container properties the double reports as declared (defaultTtl, uniqueKeyPolicy, ...).
        self.properties: dict[str, Any] = {}
        # The earliest expiry of any document, for the defaultTtl it was worked out under (None: not yet):
        # every request runs `expire`, and scanning every document each time made the double, not its
        # client, the bound of the benchmark (13 CPU s per 100k documents read with TTL on).
        self._next_expiry: tuple[Any, float] | None = None
        self.offer_throughput: int | None = None  # RU/s of its own offer (None: shared or not set)
        # Document rid sequence -> (components key, id), for links built from resource ids (`_self`).
        self._by_seq_key: dict[int, tuple[str, str]] = {}
        self._rid_bytes = database.rid_bytes + struct.pack(">I", number | 0x80000000)
        self.rid = _rid(self._rid_bytes)
        self.created_ts = int(time.time())
        #: Seconds since the epoch as the account sees them: the state's controllable clock (TTL, _ts).
        self.clock: Callable[[], float] = time.time
        self.lock = threading.RLock()
        bounds = even_boundaries_v1(feed_ranges) if (kind, version) == ("Hash", 1) else even_boundaries(feed_ranges)
        self.ranges: list[PhysicalRange] = [
            PhysicalRange(id=str(i), min=bounds[i], max=bounds[i + 1], parents=[]) for i in range(feed_ranges)
        ]
        self._mins: list[str] | None = None  # range lower bounds for bisect; reset on split
        self.gone: dict[str, list[str]] = {}  # gone range id -> child ids
        self._next_range_id = feed_ranges
        self._seq = 0
        # pkranges change feed: (etag sequence, range) per range creation.
        self.range_log: list[tuple[int, PhysicalRange]] = [(1, r) for r in self.ranges]
        self.range_etag = 1

    # --- partition keys ------------------------------------------------
    @staticmethod
    def check_partition_key(paths: list, kind: str, version: Any) -> None:
        """ValueError naming the problem unless (paths, kind, version) is a definition Cosmos accepts."""
        for path in paths:
            if not isinstance(path, str) or not path.startswith("/") or path == "/":
                raise ValueError(f"partition key path {path!r} must look like '/pk'")
        if (kind, version) not in PK_KINDS:
            raise ValueError(f"partition key kind {kind!r} version {version!r}: one of {sorted(PK_KINDS)}")
        if not 1 <= len(paths) <= (MAX_PK_PATHS if kind == "MultiHash" else 1):
            raise ValueError(
                f"partition key paths {paths}: a {kind} key has "
                f"{'1 to 3 paths' if kind == 'MultiHash' else 'exactly one path'}"
            )

    @property
    def partition_key_definition(self) -> dict:
        return {
            "paths": list(self.partition_key_paths),
            "kind": self.partition_key_kind,
            "version": self.partition_key_version,
        }

    def doc_components(self, doc: dict) -> list:
        return [partition_key_value(doc, path) for path in self.partition_key_paths]

    def components(self, pk_value: Any) -> list:
        """The components of a partition key value as the SDK takes it (a list for hierarchical keys)."""
        if len(self.partition_key_paths) == 1:
            return [pk_value]
        if not isinstance(pk_value, (list, tuple)) or len(pk_value) != len(self.partition_key_paths):
            raise ValueError(
                f"partition key {pk_value!r} must be a list of {len(self.partition_key_paths)} values "
                f"for paths {self.partition_key_paths}"
            )
        return list(pk_value)

    def pk_value(self, components: list) -> Any:
        """The SDK-shaped value of full-key components (the inverse of `components`)."""
        if len(components) != len(self.partition_key_paths):
            raise ValueError(
                f"partition key {components_key(components)} has {len(components)} values; "
                f"this container's key has {len(self.partition_key_paths)} ({', '.join(self.partition_key_paths)})"
            )
        return components[0] if len(components) == 1 else list(components)

    def epk(self, components: list) -> str:
        """The effective partition key of full (or, hierarchical, prefix) components, as the SDK hashes it."""
        if self.partition_key_kind == "MultiHash":
            return "".join(effective_partition_key(c) for c in components)
        if self.partition_key_version == 1:
            return _epk_v1(components)
        return effective_partition_key(components[0])

    def epk_range(self, components: list) -> tuple[str, str]:
        """[min, max) of the EPKs a full key or a hierarchical prefix covers."""
        epk = self.epk(components)
        if len(components) < len(self.partition_key_paths):
            return epk, epk + "FF"
        return epk, epk + "\x00"

    def id_for_rid(self, rid: str) -> str | None:
        """The id of the document whose `_rid` is `rid` (None: no such document in this container)."""
        try:
            raw = base64.b64decode(rid.replace("-", "/"), validate=True)
        except ValueError:
            return None
        if len(raw) != len(self._rid_bytes) + 8 or not raw.startswith(self._rid_bytes):
            return None
        key = self._by_seq_key.get(struct.unpack(">Q", raw[-8:])[0])
        return key[1] if key else None

    # --- routing -------------------------------------------------------
    def range_for(self, epk: str) -> PhysicalRange:
        if self._mins is None:
            self._mins = [r.min for r in self.ranges]
        return self.ranges[bisect.bisect_right(self._mins, epk) - 1]

    def range_by_id(self, range_id: str) -> PhysicalRange:
        for r in self.ranges:
            if r.id == range_id:
                return r
        if range_id in self.gone:
            raise RangeGoneError(range_id)
        raise KeyError(range_id)

    # --- writes --------------------------------------------------------
    def _finish_body(self, doc: dict, entry_rid: str, lsn: int, ts: int) -> bytes:
        doc = dict(doc)
        doc["_rid"] = entry_rid
        doc["_self"] = f"dbs/{self.database.rid}/colls/{self.rid}/docs/{entry_rid}/"
        doc["_etag"] = f'"{lsn:08x}-0000-0000-0000-{self._seq:012x}"'
        doc["_attachments"] = "attachments/"
        doc["_ts"] = ts
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode()
        except UnicodeEncodeError:  # lone surrogates: Cosmos sends them as \udXXX escapes
            return json.dumps(doc, separators=(",", ":")).encode()

    def upsert(
        self, doc: dict, *, must_exist: bool | None = None, ts: int | None = None, record_versions: bool = False
    ) -> Entry:
        """Insert or replace `doc`. must_exist: True = replace only, False = create only."""
        if not isinstance(doc, dict):
            raise ValueError(f"document must be a JSON object, got {type(doc).__name__}")
        doc_id = doc.get("id")
        if not isinstance(doc_id, str) or not doc_id:
            raise ValueError(f"document id {doc_id!r} must be a non-empty string")
        components = self.doc_components(doc)
        epk = self.epk(components)
        key = (components_key(components), doc_id)
        ttl = doc.get("ttl")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl == 0 or ttl < -1):
            raise ValueError(f"ttl {ttl!r} must be -1 (never expires) or a positive number of seconds")
        ts = int(self.clock()) if ts is None else ts
        with self.lock:
            rng = self.range_for(epk)
            old = rng.docs.pop(key, None)
            if must_exist is True and old is None:
                raise KeyError(doc_id)
            if must_exist is False and old is not None:
                rng.docs[key] = old
                raise FileExistsError(doc_id)
            rng.lsn += 1
            if old is None:
                self._seq += 1
                seq = self._seq
                entry_rid = _rid(self._rid_bytes, struct.pack(">Q", seq))
                self._by_seq_key[seq] = key
            else:
                seq = old.seq
                entry_rid = json.loads(old.body)["_rid"]
            entry = Entry(
                lsn=rng.lsn,
                seq=seq,
                epk=epk,
                ts=ts,
                body=self._finish_body(doc, entry_rid, rng.lsn, ts),
                created=old is None,
                ttl=ttl,
            )
            rng.docs[key] = entry
            rng.touch()
            if self._next_expiry is not None and (at := self.expires_at(entry)) is not None:
                self._next_expiry = (self._next_expiry[0], min(self._next_expiry[1], at))
            if record_versions:
                rng.versions.append(
                    Version(
                        rng.lsn,
                        epk,
                        ts,
                        "replace" if old else "create",
                        entry.body,
                        old.lsn if old else None,
                        doc_id,
                        key[0],
                    )
                )
            return entry

    def read(self, doc_id: str, pk_value: Any) -> Entry | None:
        components = self.components(pk_value)
        with self.lock:
            return self.range_for(self.epk(components)).docs.get((components_key(components), doc_id))

    def delete(self, doc_id: str, pk_value: Any, *, record_versions: bool = False, ttl_expired: bool = False) -> bool:
        components = self.components(pk_value)
        epk = self.epk(components)
        with self.lock:
            rng = self.range_for(epk)
            old = rng.docs.pop((components_key(components), doc_id), None)
            if old is None:
                return False
            self._by_seq_key.pop(old.seq, None)
            rng.lsn += 1
            rng.touch()
            if record_versions:
                rng.versions.append(
                    Version(
                        rng.lsn,
                        epk,
                        int(self.clock()),
                        "delete",
                        None,
                        old.lsn,
                        doc_id,
                        components_key(components),
                        ttl_expired=ttl_expired,
                    )
                )
            return True

    # --- time to live ---------------------------------------------------
    def expires_at(self, entry: Entry) -> float | None:
        """When `entry` expires (None: never), by the container's defaultTtl and the item's own ttl.

        Cosmos: no defaultTtl = TTL off (an item's ttl is ignored); -1 = on, items live until their own
        ttl says otherwise; n > 0 = items expire n seconds after their last write unless their ttl overrides.
        """
        default = self.properties.get("defaultTtl")
        if default is None:
            return None
        ttl = entry.ttl if entry.ttl is not None else default
        return None if ttl == -1 else entry.ts + ttl

    def expire(self, *, record_versions: bool = False) -> list[str]:
        """Delete every document whose TTL has run out at `clock()` (the service's background expiry);
        returns their ids. The AllVersionsAndDeletes feed records each delete with timeToLiveExpired."""
        default = self.properties.get("defaultTtl")
        if default is None:
            return []
        now = self.clock()
        with self.lock:
            known = self._next_expiry
            if known is not None and known[0] == default and now < known[1]:
                return []
            expired = []
            next_expiry = float("inf")
            for rng in self.ranges:
                for key, entry in rng.docs.items():
                    if (at := self.expires_at(entry)) is not None:
                        if at <= now:
                            expired.append(key)
                        else:
                            next_expiry = min(next_expiry, at)
            for pk, doc_id in expired:
                components = [_UNDEFINED if c == {} else c for c in json.loads(pk)]
                self.delete(doc_id, self.pk_value(components), record_versions=record_versions, ttl_expired=True)
            self._next_expiry = (default, next_expiry)
        return [doc_id for _pk, doc_id in expired]

    def bulk_load(self, docs: Iterable[dict], *, ts: int | None = None, record_versions: bool = False) -> int:
        count = 0
        with self.lock:
            for doc in docs:
                self.upsert(doc, ts=ts, record_versions=record_versions)
                count += 1
        return count

    # --- split ---------------------------------------------------------
    def split(self, range_id: str | None = None) -> list[PhysicalRange]:
        """Split `range_id` (default: the range holding the most documents) into two children."""
        with self.lock:
            parent = (
                self.range_by_id(range_id)
                if range_id is not None
                else max(self.ranges, key=lambda r: (len(r.docs), -int(r.id)))
            )
            low, high = _epk_to_int(parent.min), _epk_to_int(parent.max)
            if high - low < 2:
                raise ValueError(f"range {parent.id} [{parent.min!r}, {parent.max!r}) is too small to split")
            middle = _int_to_epk((low + high) // 2)
            children = []
            for lo, hi in ((parent.min, middle), (middle, parent.max)):
                child = PhysicalRange(
                    id=str(self._next_range_id), min=lo, max=hi, parents=[*parent.parents, parent.id], lsn=parent.lsn
                )
                self._next_range_id += 1
                children.append(child)
            # Children keep each document's LSN, so a parent continuation stays valid on them.
            for key, entry in parent.docs.items():
                (children[0] if entry.epk < middle else children[1]).docs[key] = entry
            for version in parent.versions:
                (children[0] if version.epk < middle else children[1]).versions.append(version)
            index = self.ranges.index(parent)
            self.ranges[index : index + 1] = children
            self._mins = None
            self.gone[parent.id] = [c.id for c in children]
            self.range_etag += 1
            self.range_log.extend((self.range_etag, c) for c in children)
            return children

    def ranges_changed_since(self, etag: int | None) -> list[PhysicalRange]:
        """Active ranges created after pkranges etag `etag` (all when None)."""
        active = {r.id for r in self.ranges}
        with self.lock:
            if etag is None:
                return list(self.ranges)
            return [r for seq, r in self.range_log if seq > etag and r.id in active]

    def document_count(self) -> int:
        with self.lock:
            return sum(len(r.docs) for r in self.ranges)

    def iter_documents(self) -> Iterator[dict]:
        with self.lock:
            bodies = [e.body for r in self.ranges for e in r.docs.values()]
        for body in bodies:
            yield json.loads(body)


class Database:
    def __init__(self, database_id: str, number: int):
        self.id = database_id
        self.rid_bytes = struct.pack(">I", number)
        self.rid = _rid(self.rid_bytes)
        self.created_ts = int(time.time())
        self.containers: dict[str, Container] = {}
        self.offer_throughput: int | None = None  # shared RU/s of the database (None: none)

    def container_named(self, name_or_rid: str, *, by_rid: bool) -> "Container | None":
        if not by_rid:
            return self.containers.get(name_or_rid)
        return next((c for c in self.containers.values() if c.rid == name_or_rid), None)
