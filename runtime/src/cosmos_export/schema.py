"""Schema fingerprints of exported documents.

A schema is the set of field paths with the JSON types seen at each path.
Paths use dots for object members and ``[]`` for array elements
(``address.lines[]``). Cosmos system properties (``_rid``, ``_ts`` ...) are
part of every document and tracked like any other field.

The version only moves when a run sees a path, or a type at a path, that the
previous committed schema did not have; the union is carried forward, so a
field that stops appearing never causes a bump (or a bump back).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cosmos_export.jsonl import FLOAT_FAST_MIN, float_is_fast

_TYPE_NAMES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    dict: "object",
    list: "array",
}


def _type_name(value: object) -> str:
    name = _TYPE_NAMES.get(type(value))
    if name is None:
        raise TypeError(f"document value of type {type(value).__name__} is not JSON: {value!r:.80}")
    return name


class _Missing:
    """Placeholder for a field absent from some objects of a column."""


_MISSING = _Missing()
_INF = float("inf")
_NEEDS_OWNERS = frozenset((dict, list, float))


def _floats_fast(values: Sequence[float]) -> bool:
    """``float_is_fast`` for every value, checked in C: a NaN or infinity makes the sum non-finite,
    zeros (always fast) are skipped by ``filter``. False also when the sum overflows; the caller
    then checks value by value."""
    return sum(map(abs, values)) < _INF and min(filter(None, map(abs, values)), default=_INF) >= FLOAT_FAST_MIN


class SchemaTracker:
    """Accumulates (path, type) pairs; ``observe`` is per document, ``merge`` is thread-safe."""

    def __init__(self) -> None:
        self._pairs: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def observe(self, doc: dict) -> bool:
        """Record the document's paths/types; return True when its floats are all
        in the range orjson writes byte-identically (see ``jsonl.line_bytes``),
        so the sink needs no second walk over the document."""
        return not self._walk(doc, "", self._pairs)

    def _walk(self, obj: dict, prefix: str, pairs: set[tuple[str, str]]) -> bool:
        add = pairs.add
        names = _TYPE_NAMES
        slow = False
        for key, value in obj.items():
            path = prefix + key
            cls = type(value)
            add((path, names.get(cls) or _type_name(value)))
            if cls is dict:
                slow = self._walk(value, path + ".", pairs) or slow
            elif cls is list:
                slow = self._walk_list(value, path + "[]", pairs) or slow
            elif cls is float and not float_is_fast(value):
                slow = True
        return slow

    def _walk_list(self, items: list, path: str, pairs: set[tuple[str, str]]) -> bool:
        add = pairs.add
        names = _TYPE_NAMES
        slow = False
        for value in items:
            cls = type(value)
            add((path, names.get(cls) or _type_name(value)))
            if cls is dict:
                slow = self._walk(value, path + ".", pairs) or slow
            elif cls is list:
                slow = self._walk_list(value, path + "[]", pairs) or slow
            elif cls is float and not float_is_fast(value):
                slow = True
        return slow

    def observe_page(self, docs: list[dict]) -> list[bool]:
        """``observe`` for each document of a page: the same pairs and the same per-document results.

        Works column by column (one pass over the page's values per field path, mostly in C) instead
        of one Python walk per document, which cost more CPU than reading the page from Cosmos.
        """
        slow: set[int] = set()
        if docs:
            self._columns(docs, range(len(docs)), "", slow)
        return [i not in slow for i in range(len(docs))] if slow else [True] * len(docs)

    def _columns(self, objs: Sequence[dict], owners: Any, prefix: str, slow: set[int]) -> None:
        """Record the paths of `objs` (dicts at `prefix`); add to `slow` the owners (document
        indexes, aligned with `objs`) of floats orjson would not write canonically."""
        fields = sum(map(len, objs))
        first = objs[0]
        if len(first) > 1 and fields == len(first) * len(objs):
            # The usual page: every object has exactly the first one's keys (same count, no KeyError).
            # One itemgetter pass reads all columns at once (zip transposes), instead of one per key.
            try:
                rows = list(map(itemgetter(*first), objs))
            except KeyError:
                pass
            else:
                for key, values in zip(first, zip(*rows)):
                    self._column(values, owners, prefix + key, slow)
                return
        keys = set().union(*objs)
        if len(keys) * len(objs) > 4 * fields + 64:
            # Objects used as maps (few shared keys): columns would be mostly holes, walk one by one.
            for obj, owner in zip(objs, owners):
                if self._walk(obj, prefix, self._pairs):
                    slow.add(owner)
            return
        complete = len(keys) * len(objs) == fields  # every object has every key: no holes to fill
        for key in keys:
            if complete:
                column = list(map(itemgetter(key), objs))
            else:
                column = list(map(dict.get, objs, repeat(key), repeat(_MISSING)))
            self._column(column, owners, prefix + key, slow)

    def _column(self, values: Sequence[Any], owners: Any, path: str, slow: set[int]) -> None:
        kinds = set(map(type, values))
        pure = len(kinds) == 1  # every value has the same type: no need to pick them out
        kinds.discard(_Missing)
        add = self._pairs.add
        for cls in kinds:
            name = _TYPE_NAMES.get(cls)
            if name is None:
                name = _type_name(next(v for v in values if type(v) is cls))  # raises the clear TypeError
            add((path, name))

        def of(cls: type) -> tuple[Sequence[Any], Any]:
            if pure:
                return values, owners
            picked = [i for i, v in enumerate(values) if type(v) is cls]
            return [values[i] for i in picked], (None if owners is None else [owners[i] for i in picked])

        if dict in kinds:
            self._columns(*of(dict), path + ".", slow)
        if list in kinds:
            lists, list_owners = of(list)
            elements = list(chain.from_iterable(lists))
            if elements:
                element_owners = None
                if list_owners is not None and not _NEEDS_OWNERS.isdisjoint(map(type, elements)):
                    element_owners = [o for items, o in zip(lists, list_owners) for _ in items]
                self._column(elements, element_owners, path + "[]", slow)
        if float in kinds:
            floats = of(float)[0]
            if not _floats_fast(floats):
                for value, owner in zip(values, owners):
                    if type(value) is float and not float_is_fast(value):
                        slow.add(owner)

    def update(self, pairs: set[tuple[str, str]]) -> None:
        """Add (path, type) pairs worked out elsewhere (a part's raw documents: passthrough.ShapeModel)."""
        with self._lock:
            self._pairs |= pairs

    def merge(self, other: "SchemaTracker") -> None:
        if other is self:
            return
        with other._lock:
            theirs = set(other._pairs)
        with self._lock:
            self._pairs |= theirs

    def pairs(self) -> frozenset[tuple[str, str]]:
        with self._lock:
            return frozenset(self._pairs)

    def fields(self) -> dict[str, list[str]]:
        return pairs_to_fields(self.pairs())

    def fingerprint(self) -> str:
        return fingerprint(self.fields())


def pairs_to_fields(pairs: frozenset[tuple[str, str]] | set[tuple[str, str]]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for path, type_name in pairs:
        fields.setdefault(path, []).append(type_name)
    return {path: sorted(types) for path, types in sorted(fields.items())}


def fingerprint(fields: dict[str, list[str]]) -> str:
    """SHA-256 of the canonical JSON of the sorted fields."""
    canonical = json.dumps(
        {path: sorted(types) for path, types in sorted(fields.items())},
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class SchemaInfo(BaseModel):
    """A run's schema: what manifests and checkpoints store, and what the next run compares against."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = Field(ge=1)
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    fields: dict[str, list[str]] = Field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"version": self.version, "fingerprint": self.fingerprint, "fields": self.fields}


def _union(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, list[str]]:
    merged: dict[str, set[str]] = {path: set(types) for path, types in a.items()}
    for path, types in b.items():
        merged.setdefault(path, set()).update(types)
    return {path: sorted(types) for path, types in sorted(merged.items())}


def next_schema(previous: SchemaInfo | None, observed: SchemaTracker | dict[str, list[str]]) -> SchemaInfo:
    """The schema after a run: previous version unless the run saw a new path or type."""
    seen = observed.fields() if isinstance(observed, SchemaTracker) else observed
    if previous is None:
        fields = _union({}, seen)
        return SchemaInfo(version=1, fingerprint=fingerprint(fields), fields=fields)
    fields = _union(previous.fields, seen)
    if fields == _union({}, previous.fields):
        return previous
    return SchemaInfo(version=previous.version + 1, fingerprint=fingerprint(fields), fields=fields)


# --- analytic column types ---------------------------------------------------

#: JSON type (as tracked) -> (DuckDB type, Glue/Athena type) of a promoted column.
_ANALYTIC_TYPES: dict[str, tuple[str, str]] = {
    "string": ("VARCHAR", "string"),
    "integer": ("BIGINT", "bigint"),
    "number": ("DOUBLE", "double"),
    "boolean": ("BOOLEAN", "boolean"),
}


#: The envelope of an AllVersionsAndDeletes change record: the document is under `current`.
_CHANGE_ENVELOPE = ("current", "metadata", "previous")


def document_fields(fields: dict[str, list[str]], change_records: bool) -> dict[str, list[str]]:
    """The documents' own fields: with `change_records` (AllVersionsAndDeletes) the schema also holds the
    change records' paths (`current.x`), which are the document's `x`; merged with the snapshot's top level."""
    if not change_records:
        return fields
    out: dict[str, list[str]] = {p: t for p, t in fields.items() if p.split(".", 1)[0] not in _CHANGE_ENVELOPE}
    for path, types in fields.items():
        if path.startswith("current."):
            inner = path[len("current.") :]
            out[inner] = sorted(set(out.get(inner, [])) | set(types))
    return out


def analytic_columns(fields: dict[str, list[str]], change_records: bool = False) -> dict[str, dict[str, str]]:
    """The top-level fields that can be typed table columns: {name: {"duckdb": T, "glue": T}}.

    A field qualifies when every value seen is one scalar type (nulls allowed); integer and number
    together widen to a double. Anything else (objects, arrays, a string that was once a number)
    stays in the JSON `document` column only. Because the tracked schema is a union carried
    forward, a type change between runs widens the column or drops it back to JSON, never a
    column whose files disagree.
    """
    out: dict[str, dict[str, str]] = {}
    for path, types in document_fields(fields, change_records).items():
        if "." in path or "[]" in path:
            continue
        kinds = set(types) - {"null"}
        if kinds == {"integer", "number"}:
            kinds = {"number"}
        if len(kinds) != 1 or next(iter(kinds)) not in _ANALYTIC_TYPES:
            continue
        duck, glue = _ANALYTIC_TYPES[next(iter(kinds))]
        out[path] = {"duckdb": duck, "glue": glue}
    return out
