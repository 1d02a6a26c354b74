"""The wire codec keeps every JSON value exactly: numbers as written, any size, any depth."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_bridge.errors import CodecError
from cdc_bridge.peer import codec

# Decimals as PostgreSQL's jsonb writes them: finite, with their own scale (1.10, 1E+300).
decimals = st.decimals(allow_nan=False, allow_infinity=False).filter(
    lambda d: d != d.to_integral_value() or d.as_tuple().exponent != 0
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | decimals
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _deep(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_values_round_trip_exactly(value: Any) -> None:
    text = codec.dumps(value)
    assert codec.loads(text) == value
    assert codec.dumps(codec.loads(text)) == text  # same text: scale and digits kept


@pytest.mark.parametrize(
    "text",
    [
        "1.10",
        "12345678901234.123456",
        "1234567.123456789012",
        "123456789012345678901234567890",
        "-98765432109876543210987654321.000",
        "18446744073709551616",
        "1E+300",
        '{"price": 1.10, "id": 123456789012345678901234567890}',
    ],
)
def test_numbers_keep_their_text(text: str) -> None:
    assert codec.dumps(codec.loads(text)) == text.replace(", ", ",").replace(": ", ":").encode()


def test_non_integers_are_decimals_and_integers_any_size() -> None:
    value = codec.loads('{"a": 1.10, "b": 10000000000000000000000000000000}')
    assert value == {"a": Decimal("1.10"), "b": 10**31}
    assert str(value["a"]) == "1.10"
    assert type(value["b"]) is int


def test_nesting_deeper_than_recursion_limits() -> None:
    text = _deep(20_000, "1.10")  # orjson stops at 1024 levels, Python's own at ~1000
    value = codec.loads(text)
    assert codec.dumps(value) == text.encode()


@settings(max_examples=50, deadline=None)
@given(json_values)
def test_deep_values_of_every_kind_round_trip(value: Any) -> None:
    inner = codec.dumps_text(value)
    text = '{"a":[' * 1500 + inner + ',{"k":null,"t":true}]}' * 1500
    assert codec.dumps(codec.loads(text)) == text.encode()


def test_a_fraction_inside_a_string_keeps_the_fast_path_result() -> None:
    value = codec.loads('{"t": "10:00:00.123456+00:00", "n": 7, "s": "[1.5, 2]"}')
    assert value == {"t": "10:00:00.123456+00:00", "n": 7, "s": "[1.5, 2]"}


def test_sorted_keys_and_indent() -> None:
    assert codec.dumps({"b": 1, "a": [10**30]}, sort_keys=True) == (
        b'{"a":[1000000000000000000000000000000],"b":1}'
    )
    assert codec.dumps({"b": Decimal("2.50"), "a": 1}, sort_keys=True) == b'{"a":1,"b":2.50}'
    assert codec.dumps({"a": Decimal("1.0")}, indent=True) == b'{\n  "a": 1.0\n}'


def test_integers_longer_than_python_reads_by_default() -> None:
    text = "[" + "9" * 5000 + ", 1.10]"  # numeric holds up to 131072 digits before the point
    assert codec.dumps(codec.loads(text)) == text.replace(" ", "").encode()


@pytest.mark.parametrize(
    "text", ["", "{", "[1,]", "1 2", "nan", "[NaN, 1.5]", "[Infinity]", '{"a": 1.5', "01"]
)
def test_not_json_is_refused(text: str) -> None:
    with pytest.raises(CodecError, match="not valid JSON"):
        codec.loads(text)


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), {1: "x"}, object()])
def test_values_without_json_form_are_refused(value: Any) -> None:
    with pytest.raises((CodecError, TypeError)):
        codec.dumps([10**30, value])  # the exact path too
