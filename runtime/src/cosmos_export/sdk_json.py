"""Exact, faster parsing of the Cosmos SDK's response bodies.

azure-cosmos parses every response body with ``json.loads`` (module
``azure.cosmos._synchronized_request``): the largest single cost of reading a
container (about a third of the worker's CPU, see docs/performance.md).
msgspec parses the same text faster and gives the same values: integers of any
size stay exact ``int`` (orjson would turn integers beyond 64 bits into
floats), floats are correctly rounded. Whatever msgspec refuses (``NaN`` /
``Infinity`` literals, numbers beyond the double range, lone surrogates,
nesting too deep, invalid JSON) goes to ``json.loads``, so every result and
every error is exactly the stdlib's (tests/runtime/test_sdk_json.py).

The SDK also decodes each body from UTF-8 to ``str`` before parsing it, and msgspec must then
get the UTF-8 back from that ``str`` (for text beyond ASCII, a copy): a successful response's
body is handed over as the bytes received instead, which msgspec parses directly (bench/serialization.py:
0.91 against 1.05 CPU s per 100k documents; on the bench's documents, whose astral characters make a
str of four bytes per character, 1.0 against 1.5). When msgspec refuses the bytes they are decoded the
way the SDK decodes them (strict UTF-8, or the operator's REPLACE/IGNORE fallback) and parsed as
above; error responses (status >= 400) keep the SDK's own decoding.

Within ``raw_documents()`` (the export's change-feed reads, one thread each) a successful body's
``Documents`` come back as ``msgspec.Raw`` items: each document's own bytes, unparsed, which the export
writes through when they are already canonical (passthrough.py). Such a page keeps only ``_rid`` and
``_count`` besides (the SDK reads a change-feed page's ``Documents`` alone). Every other body, and one
msgspec refuses, is parsed as above.
"""

from __future__ import annotations

import json
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from azure.cosmos import _response_decoding

_decode = msgspec.json.Decoder().decode


class _RawPage(msgspec.Struct, rename={"rid": "_rid", "count": "_count"}):
    """A page's body in raw mode: the members the SDK reads from change-feed pages (it reads ``Documents``)."""

    Documents: list[msgspec.Raw]
    rid: Any = msgspec.UNSET
    count: Any = msgspec.UNSET


_decode_page = msgspec.json.Decoder(_RawPage).decode
_local = threading.local()
#: The body decoding the SDK's ``_Request`` calls, and the name it is imported under into the SDK module.
_SDK_DECODE = _response_decoding.decode_response_body_for_status
_DECODE = "decode_response_body_for_status"


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``, computed by msgspec when it can (``Documents`` raw within ``raw_documents``)."""
    if getattr(_local, "raw", False) and isinstance(text, bytes):
        try:
            page = _decode_page(text)  # one pass; members other than these three are not kept
        except (msgspec.MsgspecError, RecursionError):
            pass  # no Documents (not a page), or not msgspec's JSON: parsed in full below, exactly as json.loads would
        else:
            body = {"_rid": page.rid, "Documents": page.Documents, "_count": page.count}
            return {k: v for k, v in body.items() if v is not msgspec.UNSET}
    try:
        return _decode(text)
    except (msgspec.MsgspecError, RecursionError):  # json.loads gives its own value or error
        if isinstance(text, bytes):
            text = _response_decoding.decode_response_body(text)  # the SDK's UTF-8 rules, its errors
        return json.loads(text)


@contextmanager
def raw_documents() -> Iterator[None]:
    """Within, on this thread: successful bodies' ``Documents`` are ``msgspec.Raw`` items (see above)."""
    before = getattr(_local, "raw", False)
    _local.raw = True
    try:
        yield
    finally:
        _local.raw = before


def _decode_body(data: bytes, status_code: int, operation_context: str | None = None) -> str | bytes:
    """The SDK's ``decode_response_body_for_status``, except that a successful body stays bytes (for ``loads``)."""
    if status_code < 400:
        return data
    return _SDK_DECODE(data, status_code, operation_context)


class _JsonWithFastLoads(types.SimpleNamespace):
    """The ``json`` module as the SDK sees it: ``loads`` replaced, every other name the stdlib's."""

    loads = staticmethod(loads)

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)


def _sdk_module() -> types.ModuleType:
    from azure.cosmos import _synchronized_request

    return _synchronized_request


def install() -> bool:
    """Make the SDK parse response bodies with ``loads`` (successful ones from their bytes); idempotent.

    Only while the SDK module imports the stdlib ``json`` module and ``decode_response_body_for_status``
    under those names (azure-cosmos 4.x); otherwise nothing changes and False is returned: the SDK keeps
    its own decoding and parsing.
    """
    module = _sdk_module()
    current = getattr(module, "json", None)
    if isinstance(current, _JsonWithFastLoads):
        return True
    if current is not json or getattr(module, _DECODE, None) not in (_decode_body, _SDK_DECODE):
        return False
    setattr(module, _DECODE, _decode_body)
    module.json = _JsonWithFastLoads()  # type: ignore[attr-defined]
    return True


def installed() -> bool:
    module = _sdk_module()
    return (
        isinstance(getattr(module, "json", None), _JsonWithFastLoads) and getattr(module, _DECODE, None) is _decode_body
    )
