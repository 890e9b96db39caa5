"""Write a document through as the bytes Cosmos sent, when those bytes already are its canonical line.

The SDK parses every page into Python objects, and the export then walked each document for its
schema and serialized it again: together more CPU than the read itself (docs/performance.md). A
change-feed page read in raw mode (``sdk_json.raw_documents``) gives each document as its own bytes
(``msgspec.Raw``) instead. A part's ``ShapeModel`` holds the structure of the documents written to
the part so far (every object's keys in order, the JSON types seen at every path) as msgspec types.
A document that decodes against those types and encodes back to exactly its own bytes

- has no path, and no type at a path, that the model lacks: the part's schema stays exact;
- is in msgspec's compact form, which is the canonical line form (``jsonl``: the same escapes and
  the same shortest round-trip digits, checked over every code point and 450,000 floats in
  tests/runtime/test_passthrough.py) except for floats outside [1e-4, 1e16): msgspec writes
  ``1e16`` and ``0.00001`` where ``json.dumps`` writes ``1e+16`` and ``1e-05``. Float fields
  refuse magnitudes of 1e16 and above, and msgspec's two spellings of smaller ones are looked for
  in the bytes (``_TINY_PLAIN``, ``_TINY_EXP``).

Every other document is parsed (``sdk_json.loads``), learnt and serialized as before
(``jsonl.line_bytes``), so a part's lines are byte-identical whichever way each one went.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Union

import msgspec

from cosmos_export import jsonl, metrics, sdk_json
from cosmos_export.jsonl import float_is_fast
from cosmos_export.schema import _TYPE_NAMES, SchemaTracker, _type_name

#: Floats msgspec writes exactly as ``json.dumps`` does, apart from the small ones (see ``_TINY_PLAIN``).
_FLOAT = Annotated[float, msgspec.Meta(gt=-1e16, lt=1e16)]
#: An array only ever seen empty: its elements have no type yet.
_EMPTY = Annotated[list, msgspec.Meta(max_length=0)]
#: msgspec's spellings of a float below 1e-4 that differ from ``json.dumps``'s: 0.00001 (1e-05)
#: and 1e-7 (1e-07). Either text inside a string only sends that document the slow way.
_TINY_PLAIN = b"0.0000"
_TINY_EXP = re.compile(rb"e-[0-9](?![0-9])")
#: Past this many paths, or this many changes of the model (each rebuilds its decoder), a part's
#: documents are too irregular to go the fast way (objects used as maps, say): the rest of the part
#: takes the slow way, which costs about what every document cost before. The bench's documents
#: change a part's model about 10 times, nearly all within its first page.
MAX_NODES = 1000
MAX_CHANGES = 64

_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": _FLOAT, "boolean": bool, "null": None}


class _Node:
    """One path: the JSON types seen there, an object's keys in document order, an array's elements."""

    __slots__ = ("kinds", "keys", "items")

    def __init__(self) -> None:
        self.kinds: set[str] = set()
        self.keys: dict[str, _Node] = {}
        self.items: _Node | None = None


class ShapeModel:
    """The documents of one part seen so far, and the msgspec decoder that accepts exactly their shapes."""

    def __init__(self) -> None:
        self._root = _Node()
        self._root.kinds.add("object")
        self._nodes = 1
        self._changes = 0
        self._rest = SchemaTracker()  # the paths of documents learnt once the fast way is off
        self._odd_float = False  # the document being learnt has a float orjson would not write canonically
        #: ``raw`` itself when its bytes are the document's canonical line and the model has its shape, else
        #: None; a document written this way adds its `_ts` to ``newest_ts``. Rebuilt when the model changes.
        self.line: Callable[[msgspec.Raw], msgspec.Raw | None] = self._first_line
        self.enabled = True
        #: The newest `_ts` of the documents written through ``line`` (metrics.newest_ts's rules).
        self.newest_ts: int | None = None

    # -- learning ----------------------------------------------------------

    def learn(self, doc: dict) -> bool:
        """Add a parsed document's paths, types and key order; True when orjson writes its floats canonically
        (``SchemaTracker.observe``'s flag, for ``jsonl.line_bytes``)."""
        if not self.enabled:  # only its paths matter now: the schema's own walk is the cheapest
            return self._rest.observe(doc)
        self._odd_float = False
        if self._object(self._root, doc):
            self._changes += 1
            if self._nodes > MAX_NODES or self._changes > MAX_CHANGES:
                self.enabled = False
            self.line = self._first_line  # rebuilt (or refused) at the next document
        return not self._odd_float

    def _object(self, node: _Node, obj: dict) -> bool:
        keys = node.keys
        changed = False
        new = [key for key in obj if key not in keys]  # not `obj.keys() - keys.keys()`: O(len(keys))
        if new:
            self._nodes += len(new)
            node.keys = keys = _merged_order(keys, obj)
            changed = True
        for key, value in obj.items():
            changed = self._value(keys[key], value) or changed
        return changed

    def _value(self, node: _Node, value: object) -> bool:
        cls = type(value)
        name = _TYPE_NAMES.get(cls) or _type_name(value)
        changed = name not in node.kinds
        if changed:
            node.kinds.add(name)
        if cls is dict:
            changed = self._object(node, value) or changed  # type: ignore[arg-type]  # checked by type above
        elif cls is float and not float_is_fast(value):  # type: ignore[arg-type]  # checked by type above
            self._odd_float = True
        elif cls is list:
            for item in value:  # type: ignore[attr-defined]  # checked by type above
                if node.items is None:
                    node.items = _Node()
                    self._nodes += 1
                    changed = True
                changed = self._value(node.items, item) or changed
        return changed

    def pairs(self) -> set[tuple[str, str]]:
        """The (path, type) pairs of every document learnt (``SchemaTracker``'s paths)."""
        out: set[tuple[str, str]] = set(self._rest.pairs())
        _pairs(self._root, "", out)
        return out

    # -- the fast way --------------------------------------------------------

    def _first_line(self, raw: msgspec.Raw) -> msgspec.Raw | None:
        """``line`` before the model's decoder is built (once per change of the model)."""
        try:
            self.line = self._fast_line() if self.enabled else _refuse
        except (TypeError, ValueError, RecursionError):  # a shape msgspec cannot type: the slow way, never a failure
            self.enabled, self.line = False, _refuse
        return self.line(raw)

    def _fast_line(self) -> Callable[[msgspec.Raw], msgspec.Raw | None]:
        """``line`` for the model as it is now: names bound once, one Python frame per document."""
        decode = msgspec.json.Decoder(_type_of(self._root)).decode
        encode_into = msgspec.json.Encoder().encode_into
        encoded = bytearray()  # reused: compared with the raw bytes in place (memcmp), never handed out
        ts_field = f"f{list(self._root.keys).index('_ts')}" if "_ts" in self._root.keys else None
        tiny_exp = _TINY_EXP.search
        error = msgspec.MsgspecError

        def line(raw: msgspec.Raw) -> msgspec.Raw | None:
            try:
                doc = decode(raw)
            except error:  # a path, type or key order the model lacks, or not msgspec's JSON
                return None
            except RecursionError:  # nested deeper than msgspec goes: json.loads may still parse it
                return None
            encode_into(doc, encoded)
            if encoded != raw or _TINY_PLAIN in encoded or (b"e-" in encoded and tiny_exp(encoded)):
                return None
            ts = getattr(doc, ts_field) if ts_field else None
            if type(ts) is int:
                if self.newest_ts is None or ts > self.newest_ts:
                    self.newest_ts = ts
            else:  # no top-level integer _ts (a change record, say): metrics.newest_ts's other rules
                self.add_ts(metrics.newest_ts([raw]))
            return raw

        return line

    def add_ts(self, ts: int | None) -> None:
        if ts is not None and (self.newest_ts is None or ts > self.newest_ts):
            self.newest_ts = ts


def _refuse(raw: msgspec.Raw) -> None:
    return None


def _merged_order(keys: dict[str, _Node], obj: dict) -> dict[str, _Node]:
    """The model's keys with the object's new ones, each placed right after the key it follows in the object."""
    order = list(keys)
    at = 0  # insertion point: after the last key of `obj` already placed
    for key in obj:
        if key in keys:
            at = order.index(key) + 1
        else:
            order.insert(at, key)
            at += 1
    return {key: keys[key] if key in keys else _Node() for key in order}


def _pairs(node: _Node, prefix: str, out: set[tuple[str, str]]) -> None:
    """The pairs under an object node: each member's path is `prefix` + its key."""
    for key, child in node.keys.items():
        _path_pairs(child, prefix + key, out)


def _path_pairs(node: _Node, path: str, out: set[tuple[str, str]]) -> None:
    out.update((path, kind) for kind in node.kinds)
    _pairs(node, path + ".", out)  # members exist only where an object was seen
    if node.items is not None:
        _path_pairs(node.items, path + "[]", out)


def _type_of(node: _Node) -> Any:
    """The msgspec type accepting exactly the values seen at `node` (a union of one member per JSON type)."""
    members: list[Any] = []
    for kind in sorted(node.kinds):
        if kind == "object":
            members.append(_struct_of(node))
        elif kind == "array":
            items = node.items
            members.append(list[_type_of(items)] if items is not None and items.kinds else _EMPTY)  # type: ignore[misc]  # a runtime type
        else:
            members.append(_SCALARS[kind])
    return Union[tuple(members)]  # built at run time


def _struct_of(node: _Node) -> Any:
    """An object's Struct: its keys in order, each optional (absent keys stay absent when encoded)."""
    fields = [
        (f"f{i}", Union[_type_of(child), msgspec.UnsetType], msgspec.UNSET)  # built at run time
        for i, child in enumerate(node.keys.values())
    ]
    rename = {f"f{i}": key for i, key in enumerate(node.keys)}
    return msgspec.defstruct("Shape", fields, rename=rename, forbid_unknown_fields=True, gc=False)


def slow_line(raw: msgspec.Raw, model: ShapeModel) -> bytes:
    """A document the fast way refused: parsed as the SDK would, learnt (shape and `_ts`), serialized canonically."""
    doc = sdk_json.loads(bytes(raw))
    if type(doc) is not dict:
        raise TypeError(f"a change-feed document is a JSON object, got {type(doc).__name__}: {bytes(raw)[:80]!r}")
    fast = model.learn(doc)
    model.add_ts(metrics.newest_ts([doc]))
    return jsonl.line_bytes(doc, fast)
