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
"""

from __future__ import annotations

import json
import types
from typing import Any

import msgspec

_decode = msgspec.json.Decoder().decode


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``, computed by msgspec when it can."""
    try:
        return _decode(text)
    except (msgspec.MsgspecError, RecursionError):  # json.loads gives its own value or error
        return json.loads(text)


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
