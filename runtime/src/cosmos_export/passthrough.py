"""Documents exported as the bytes Cosmos sent, whenever those bytes already are their canonical line.

The worker has the SDK hand over each page's documents as raw JSON (``sdk_json.raw_documents``):
Cosmos returns compact JSON, which for most documents is byte for byte the canonical line of
``jsonl.py``, so parsing every document into Python objects only to serialize it again (and to
walk it again for the schema) was most of what the export added to the bare read. A document
passes through unchanged when all of these hold; any other takes the parse-and-encode way
(``jsonl.line_bytes``, ``SchemaTracker.observe``), so every line stays canonical:

- its only escapes are the ones json.dumps writes (\\" \\\\ \\n \\r \\t \\b \\f): each string is then
  exactly its canonical text (``\\u`` escapes are rare: control characters, lone surrogates);
- each float is written as Python writes it (``repr``) and no integer is ``-0``;
- its *shape* was found canonical: no whitespace between tokens, no key twice in an object.

A document's shape is its text with string values emptied, digits and signs removed, ``true`` and
``false`` written alike and exponents written like decimal points: its keys, its nesting and the
kind of each value (string, integer, number, boolean, null), which fix its schema (path, type)
pairs and whether its structure is canonical. The documents of a container share few shapes, so
each shape is worked out once, from one parsed document, and cached; the rest is a handful of
C-level passes over the whole page (split, join, translate, one regex).
"""

from __future__ import annotations

import re
from itertools import repeat
from operator import mul

import msgspec

from cosmos_export import jsonl, sdk_json
from cosmos_export.schema import SchemaTracker

Pairs = frozenset[tuple[str, str]]

#: Shapes kept per sink (a few hundred bytes each); the cache starts afresh when full.
MAX_SHAPES = 4096

# Outside strings: digits and signs go, the letters of true/false/null go but one each ("b", "b",
# "n"), an exponent marker becomes "." (a float, like a decimal point), so 12 -> "", -3.5 -> ".".
_SHAPE_TABLE = bytes.maketrans(b"tfeE", b"bb..")
_SHAPE_DELETE = b"0123456789+-ruals"
#: An escape json.dumps does not write (ensure_ascii=False): \u, \/. Also matches after an escaped
#: backslash (\\u): such a document is then parsed, which is slower, never wrong.
_ODD_ESCAPE = re.compile(rb'\\[^"\\nrtbf]')
#: A float token (a fraction or an exponent) in JSON text with its strings removed.
_FLOAT = re.compile(rb"-?\d+(?:\.\d+(?:[eE][+-]?\d+)?|[eE][+-]?\d+)")
#: An integer minus zero (json.loads gives 0, written "0"); also matches the rare exponent "-0".
_MINUS_ZERO = re.compile(rb"-0(?=[,\]}])")


class Passthrough:
    """Canonical lines and schema pairs of raw documents; one per sink (not shared between threads)."""

    def __init__(self) -> None:
        self._shapes: dict[bytes, Pairs | None] = {}  # None: documents of that shape are not canonical
        self._pairsets: dict[Pairs, Pairs] = {}  # one object per distinct pair set (shapes share them)

    def encode(self, docs: list[msgspec.Raw]) -> tuple[list[bytes], list[Pairs]]:
        """Each document's canonical line (without newline) and its schema pairs."""
        lines = list(map(bytes, docs))
        page = b"\n".join(lines)
        if _ODD_ESCAPE.search(page):
            index: range | list[int] = [i for i, line in enumerate(lines) if not _ODD_ESCAPE.search(line)]
            clean = [lines[i] for i in index]
            page = b"\n".join(clean)
        else:
            index, clean = range(len(lines)), lines
        pairs: list[Pairs | None] = [None] * len(lines)
        for i, found in zip(index, self._passing(page, clean)):
            pairs[i] = found
        for i, found in enumerate(pairs):
            if found is None:  # parse and encode (also learns nothing: such documents are rare)
                lines[i], pairs[i] = self._encoded(lines[i])
        return lines, pairs  # type: ignore[return-value]  # every None was replaced just above

    def _passing(self, page: bytes, lines: list[bytes]) -> list[Pairs | None]:
        """The pairs of each document that passes through as is, else None (`page`: the lines joined)."""
        if not lines:
            return []
        # Escaped backslashes and quotes out of the way (same bytes for the same escape), so that every
        # '"' left delimits a string: even items are the text between strings, odd items string contents.
        parts = page.replace(b"\\\\", b"\x01\x01").replace(b'\\"', b"\x01\x02").split(b'"')
        outside = b'"'.join(parts[0::2])
        passing: list[bool] | None = None
        if _MINUS_ZERO.search(outside) or not _floats_canonical(_FLOAT.findall(outside)):
            passing = [not _MINUS_ZERO.search(o) and _floats_canonical(_FLOAT.findall(o)) for o in outside.split(b"\n")]
        # A string followed by ":" is a key and stays; string values are emptied.
        parts[1::2] = map(mul, parts[1::2], map(bytes.startswith, parts[2::2], repeat(b":")))
        parts[0::2] = outside.translate(_SHAPE_TABLE, _SHAPE_DELETE).split(b'"')
        shapes = b'"'.join(parts).split(b"\n")
        if len(shapes) != len(lines):  # a newline between tokens: not compact, none passes
            return [None] * len(lines)
        known = self._shapes
        out: list[Pairs | None] = []
        append = out.append
        for i, shape in enumerate(shapes):
            if passing is not None and not passing[i]:
                append(None)
                continue
            try:
                append(known[shape])
            except KeyError:
                append(self._learn(shape, lines[i]))
        return out

    def _learn(self, shape: bytes, line: bytes) -> Pairs | None:
        """Work out a shape from one of its documents (whose strings and numbers are canonical)."""
        doc = sdk_json.loads(line)
        found: Pairs | None = None
        if type(doc) is dict:
            tracker = SchemaTracker()
            fast = tracker.observe(doc)
            # Strings and numbers are canonical, so the bytes differ only where the structure is not.
            if jsonl.line_bytes(doc, fast) == line:
                found = self._intern(tracker.pairs())
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
            self._pairsets.clear()
        self._shapes[shape] = found
        return found

    def _encoded(self, line: bytes) -> tuple[bytes, Pairs]:
        doc = sdk_json.loads(line)
        tracker = SchemaTracker()
        fast = tracker.observe(doc)
        return jsonl.line_bytes(doc, fast), self._intern(tracker.pairs())

    def _intern(self, pairs: Pairs) -> Pairs:
        return self._pairsets.setdefault(pairs, pairs)


def _floats_canonical(tokens: list[bytes]) -> bool:
    """Every float token is what Python writes for its value (json.loads then json.dumps)."""
    return not tokens or list(map(str.encode, map(repr, map(float, tokens)))) == tokens
