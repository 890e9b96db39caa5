"""sdk_json.loads must be json.loads: same values, same types, same errors; install() patches only the SDK."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosmos_export import sdk_json

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5), max_leaves=30
)


def same(a: object, b: object) -> bool:
    """Equal with equal types all the way down (1 == 1.0 == True would hide a changed number)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))  # type: ignore[arg-type]
    return a == b


@settings(max_examples=300, deadline=None)
@given(_values, st.booleans())
def test_any_json_text_parses_to_the_same_values_and_types(value: object, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert same(sdk_json.loads(text), json.loads(text))
    assert same(sdk_json.loads(text.encode()), json.loads(text.encode()))  # the SDK may hand over bytes too


@pytest.mark.parametrize(
    "text",
    [
        '{"big": 18446744073709551616, "neg": -9223372036854775809, "huge": 123456789012345678901234567890}',
        "[1e-7, 5e-324, 1.7976931348623157e308, -0.0, 0.1, 1E5, 123456789.125]",
        '"\\ud83d\\ude00 \\u00e9 \\u2028"',
        '{"a": 1, "a": 2}',
        # msgspec refuses these; json.loads decides (values it accepts, errors it raises)
        "[NaN, Infinity, -Infinity]",
        "1e400",
        "-1e400",
        '"\\ud800"',
        '"a\\udfffb"',
        "[" * 5000 + "]" * 5000,
    ],
)
def test_edge_cases_match_the_stdlib(text: str) -> None:
    try:
        expected = json.loads(text)
    except RecursionError:
        with pytest.raises(RecursionError):
            sdk_json.loads(text)
        return
    assert same(sdk_json.loads(text), expected)


@pytest.mark.parametrize("text", ["[1,]", '{"a":1,}', "[1] x", "01", '"\t"', '"\\x"', "", '{"a" 1}'])
def test_invalid_json_raises_the_stdlib_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        sdk_json.loads(text)
    assert str(got.value) == str(expected.value)


def test_install_patches_only_the_sdk_module_and_is_idempotent(monkeypatch) -> None:
    from azure.cosmos import _synchronized_request as sdk

    monkeypatch.setattr(sdk, "json", json)
    assert not sdk_json.installed()
    assert sdk_json.install() and sdk_json.install()
    assert sdk_json.installed()
    assert sdk.json.loads is sdk_json.loads
    assert sdk.json.dumps is json.dumps and sdk.json.JSONDecodeError is json.JSONDecodeError
    assert json.loads is not sdk_json.loads  # the stdlib module itself is untouched


def test_install_leaves_an_unknown_sdk_layout_alone(monkeypatch) -> None:
    from azure.cosmos import _synchronized_request as sdk

    other = object()
    monkeypatch.setattr(sdk, "json", other)
    assert sdk_json.install() is False
    assert sdk.json is other
    monkeypatch.setattr(sdk, "json", json)
    monkeypatch.setattr(sdk, "decode_response_body_for_status", lambda data, status, context=None: data.decode())
    assert sdk_json.install() is False
    assert sdk.json is json  # neither half is patched when the other one is not where it is expected


def test_successful_bodies_reach_loads_as_bytes_error_bodies_as_the_sdk_decodes_them() -> None:
    from azure.cosmos import _synchronized_request as sdk

    assert sdk_json.install() and sdk_json.installed()
    body = '{"Documents":[{"id":"é😀"}]}'.encode()
    assert sdk.decode_response_body_for_status(body, 200) is body  # parsed from its bytes, no str made
    assert sdk.decode_response_body_for_status(body, 404) == body.decode()  # an error's message stays text
    assert sdk.decode_response_body_for_status(b'{"code":"\xff"}', 500) == '{"code":"\ufffd"}'  # the SDK's rule
    assert same(sdk.json.loads(body), json.loads(body))


def test_bad_utf8_in_a_successful_body_is_refused_unless_the_operator_allows_it(monkeypatch) -> None:
    from azure.cosmos._response_decoding import _MALFORMED_INPUT_ENV_VAR

    body = b'{"id":"a\xffb"}'
    monkeypatch.delenv(_MALFORMED_INPUT_ENV_VAR, raising=False)
    with pytest.raises(UnicodeDecodeError, match=_MALFORMED_INPUT_ENV_VAR):  # the SDK's own error and hint
        sdk_json.loads(body)
    monkeypatch.setenv(_MALFORMED_INPUT_ENV_VAR, "REPLACE")
    assert sdk_json.loads(body) == {"id": "a\ufffdb"}


def test_install_restores_after_a_partial_unpatch(monkeypatch) -> None:
    from azure.cosmos import _synchronized_request as sdk

    assert sdk_json.install()
    monkeypatch.setattr(sdk, "json", json)  # as the idempotence test above does: decoding stays patched
    assert not sdk_json.installed()
    assert sdk_json.install() and sdk_json.installed()
