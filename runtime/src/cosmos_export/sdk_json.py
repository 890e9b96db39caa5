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

Within ``raw_documents()`` (the export's page reads, one thread each) a response body's
``Documents`` come back as ``msgspec.Raw`` items, each document's exact bytes, unparsed: the
export writes them through when they are canonical (passthrough.py). Every other body, and a
body msgspec refuses, is parsed as above.
"""

from __future__ import annotations

import json
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

_decode = msgspec.json.Decoder().decode
_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_items = msgspec.json.Decoder(list[msgspec.Raw]).decode
_local = threading.local()


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``, computed by msgspec when it can (``Documents`` raw within ``raw_documents``)."""
    if getattr(_local, "raw", False):
        try:
            fields = _decode_fields(text)
            if "Documents" in fields:
                return {k: _decode_items(v) if k == "Documents" else _decode(v) for k, v in fields.items()}
        except (msgspec.MsgspecError, RecursionError):
            pass  # parsed in full below, exactly as json.loads would
    try:
        return _decode(text)
    except (msgspec.MsgspecError, RecursionError):  # json.loads gives its own value or error
        return json.loads(text)


@contextmanager
def raw_documents() -> Iterator[None]:
    """Within, on this thread: response bodies' ``Documents`` are ``msgspec.Raw`` items (see above)."""
    before = getattr(_local, "raw", False)
    _local.raw = True
    try:
        yield
    finally:
        _local.raw = before


class _JsonWithFastLoads(types.SimpleNamespace):
    """The ``json`` module as the SDK sees it: ``loads`` replaced, every other name the stdlib's."""

    loads = staticmethod(loads)

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)


def _sdk_module() -> types.ModuleType:
    from azure.cosmos import _synchronized_request

    return _synchronized_request


def install() -> bool:
    """Make the SDK parse response bodies with ``loads``; idempotent.

    Only while the SDK module imports the stdlib ``json`` module under that name (azure-cosmos
    4.x); otherwise nothing changes and False is returned: the SDK keeps its own parsing.
    """
    module = _sdk_module()
    current = getattr(module, "json", None)
    if isinstance(current, _JsonWithFastLoads):
        return True
    if current is not json:
        return False
    module.json = _JsonWithFastLoads()  # type: ignore[attr-defined]
    return True


def installed() -> bool:
    return isinstance(getattr(_sdk_module(), "json", None), _JsonWithFastLoads)
