"""JSON Lines serialization and the streaming compressors of export parts.

Canonical line format: ``json.dumps(doc, ensure_ascii=False, separators=(",", ":"))``
encoded as UTF-8, one document per line, every line ending in ``\\n``.

Lone surrogates: ``json.loads`` accepts ``"\\ud800"`` (Cosmos stores such
strings), but a lone surrogate cannot be encoded as UTF-8. Writing it with
'surrogatepass' would produce bytes that are not UTF-8 and that Athena/Spark
readers reject, so each lone surrogate is written as its JSON escape
``\\udXXX`` instead: the line stays valid UTF-8 JSON and ``json.loads`` gives
back exactly the original string.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Iterator
from typing import Protocol

import orjson
import zstandard

from cosmos_export.contract import COMPRESSIONS, Compression  # re-exported: their home is contract.py

#: Defaults chosen from bench/serialization.py (see the README / report):
#: gzip level 1 costs a fraction of level 6's CPU for ~10% larger output;
#: zstd is both smaller and several times cheaper than any gzip level. zstd level 1 rather than 3:
#: on the bench's documents it is no larger (ratio 8.1 against 7.6 for 30k documents) and the
#: worker's CPU fell 7.2 -> 6.4 s per 100k (2026-12-07, docs/performance.md).
DEFAULT_LEVELS: dict[str, int] = {"gzip": 1, "zstd": 1}

_SUFFIX = {"gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}
_CONTENT_TYPE = {"gzip": "application/gzip", "zstd": "application/zstd"}

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_encode = _encoder.encode
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


#: orjson writes exactly the canonical bytes (same escapes, same shortest
#: round-trip float digits) except for: floats below 1e-4 in magnitude (it
#: writes "1e-7" where json writes "1e-07"), NaN/Infinity (it writes null),
#: integers outside [-2**63, 2**64) and lone surrogates (it raises). Documents
#: holding any of those take the stdlib path, so output is byte-identical either way.
FLOAT_FAST_MIN = 1e-4


def float_is_fast(value: float) -> bool:
    return FLOAT_FAST_MIN <= abs(value) < float("inf") or value == 0.0


def needs_stdlib(obj: object) -> bool:
    """True when orjson would not write ``obj`` byte-identically to the canonical form."""
    cls = type(obj)
    if cls is float:
        return not float_is_fast(obj)  # type: ignore[arg-type]  # exact type checked above (faster than isinstance)
    if cls is dict:
        return any(needs_stdlib(v) for v in obj.values())  # type: ignore[attr-defined]  # as above
    if cls is list:
        return any(needs_stdlib(v) for v in obj)  # type: ignore[attr-defined]  # as above
    return False


def line_bytes(doc: object, fast: bool = True) -> bytes:
    """Canonical UTF-8 bytes of one document, without the newline.

    ``fast`` says the caller has checked the document's floats (``needs_stdlib``
    is False); orjson's own errors (huge ints, lone surrogates) fall back too.
    """
    if fast:
        try:
            return orjson.dumps(doc)
        except (orjson.JSONEncodeError, TypeError):
            pass
    return to_utf8(_encode(doc))


def dumps_line(doc: object) -> str:
    """One document as its canonical JSON text (no newline)."""
    return _encode(doc)


def to_utf8(text: str) -> bytes:
    """UTF-8 bytes of serialized JSON text, escaping lone surrogates losslessly."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Surrogates can only occur inside JSON strings, where the escape is valid.
        return _LONE_SURROGATE.sub(_escape_surrogate, text).encode("utf-8")


def encode_lines(docs: Iterable[object]) -> bytes:
    """Canonical JSON Lines bytes of ``docs`` (each line ends with a newline)."""
    lines = [line_bytes(doc, not needs_stdlib(doc)) for doc in docs]
    if not lines:
        return b""
    lines.append(b"")
    return b"\n".join(lines)


def encode_lines_stdlib(docs: Iterable[object]) -> bytes:
    """The canonical form by definition (json module only); the reference for tests."""
    return b"".join(to_utf8(_encode(doc)) + b"\n" for doc in docs)


def suffix(compression: Compression) -> str:
    check_compression(compression)
    return _SUFFIX[compression]


def content_type(compression: Compression) -> str:
    check_compression(compression)
    return _CONTENT_TYPE[compression]


def check_compression(compression: str) -> None:
    if compression not in _SUFFIX:
        raise ValueError(f"compression={compression!r} is not supported: use one of {', '.join(COMPRESSIONS)}")


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _ZstdCompressor:
    def __init__(self, level: int) -> None:
        # The frame checksum lets any reader detect a corrupted part on its own.
        self._obj = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


def new_compressor(compression: Compression, level: int | None = None) -> Compressor:
    """A streaming compressor producing one complete .gz member or .zst frame."""
    check_compression(compression)
    level = DEFAULT_LEVELS[compression] if level is None else level
    if compression == "gzip":
        if not 1 <= level <= 9:
            raise ValueError(f"gzip level={level} is out of range: use 1..9")
        return zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    if not 1 <= level <= 22:
        raise ValueError(f"zstd level={level} is out of range: use 1..22")
    return _ZstdCompressor(level)


class Readable(Protocol):
    """What a part is read from: a file, an S3 StreamingBody, a wrapper that hashes what it reads."""

    def read(self, n: int = -1, /) -> bytes: ...


def iter_decompressed(stream: Readable, compression: Compression, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Decompressed bytes of a part read from ``stream`` chunk by chunk (bounded memory)."""
    check_compression(compression)
    if compression == "gzip":
        obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while chunk := stream.read(chunk_size):
            if out := obj.decompress(chunk):
                yield out
        if tail := obj.flush():
            yield tail
        if not obj.eof:
            raise ValueError("gzip stream is truncated (no end of member)")
        return
    # zstandard reads from any object with read(); its stubs ask for IO[bytes].
    reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)  # type: ignore[arg-type]
    while chunk := reader.read(chunk_size):
        yield chunk


def decompress(data: bytes, compression: Compression) -> bytes:
    import io

    return b"".join(iter_decompressed(io.BytesIO(data), compression))


def compression_of_key(key: str) -> Compression:
    for name, ext in _SUFFIX.items():
        if key.endswith(ext):
            return name  # type: ignore[return-value]
    raise ValueError(f"key {key!r} has no known part suffix ({', '.join(_SUFFIX.values())})")
