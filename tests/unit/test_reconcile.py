"""Reconcile's value comparison: exact JSON equality (bridge peers), or with numbers
compared by value (REST peers, whose APIs may reformat numbers)."""

from __future__ import annotations

from decimal import Decimal

from cdc_bridge.ops.reconcile import differing_fields, json_equal, key_token
from cdc_bridge.peer.codec import loads


def test_numbers_compare_by_value_for_rest_peers() -> None:
    assert json_equal(loads("1.50"), loads("1.5"), exact=False)
    assert json_equal(1, Decimal("1.000"), exact=False)
    assert json_equal(loads('{"a": [1.10, 2]}'), {"a": [1.1, 2.0]}, exact=False)
    assert not json_equal(loads("1.51"), loads("1.5"), exact=False)


def test_numbers_compare_as_written_for_bridge_peers() -> None:
    # row::text shows numeric(10,2) 1.50 and a 1.5 differently: so does reconcile.
    assert not json_equal(loads("1.50"), loads("1.5"))
    assert not json_equal(loads('{"a": [1.10]}'), loads('{"a": [1.1]}'))
    assert json_equal(loads('{"a": [1.10], "b": 2}'), loads('{"b": 2, "a": [1.10]}'))
    big = loads('{"n": 123456789012345678901234567890}')
    assert json_equal(big, loads('{"n": 123456789012345678901234567890}'))
    assert not json_equal(big, loads('{"n": 123456789012345678901234567891}'))


def test_exact_decimals_are_not_rounded() -> None:
    for exact in (True, False):
        a, b = loads("12345678901234567.01"), loads("12345678901234567.02")
        assert not json_equal(a, b, exact=exact)


def test_values_nested_deeper_than_python_recursion_compare() -> None:
    deep = "[" * 5000 + "1.10" + "]" * 5000
    other = "[" * 5000 + "1.1" + "]" * 5000
    for exact in (True, False):
        assert json_equal(loads(deep), loads(deep), exact=exact)
    assert not json_equal(loads(deep), loads(other))
    assert json_equal(loads(deep), loads(other), exact=False)


def test_booleans_strings_and_null_are_not_numbers() -> None:
    assert not json_equal(True, 1)
    assert not json_equal("1", 1)
    assert not json_equal(None, 0)
    assert json_equal(None, None)
    assert not json_equal({"a": 1}, {"a": 1, "b": None})


def test_key_token_ignores_number_formatting_and_column_order() -> None:
    assert key_token({"id": 7}, ("id",)) == key_token({"id": Decimal("7.0")}, ("id",))
    assert key_token({"a": 1, "b": "x"}, ("a", "b")) == key_token({"b": "x", "a": 1}, ("a", "b"))
    assert key_token({"id": 7}, ("id",)) != key_token({"id": "7"}, ("id",))


def test_key_token_keeps_every_digit() -> None:
    big = 10**30
    assert key_token({"id": big}, ("id",)) != key_token({"id": big + 1}, ("id",))
    assert key_token({"id": big}, ("id",)) == key_token({"id": Decimal(big).scaleb(0)}, ("id",))
    assert not json_equal(Decimal("1.0000000000000000000000000000001"), 1, exact=False)


def test_differing_fields_skip_columns_the_peer_lacks() -> None:
    ours = {"id": 1, "name": "a", "price": Decimal("1.50"), "internal": "x"}
    theirs = {"id": 1, "name": "b", "price": 1.5}
    assert differing_fields(ours, theirs, exact=False) == {"name": ("a", "b")}
    assert differing_fields(ours, theirs) == {"name": ("a", "b"), "price": (Decimal("1.50"), 1.5)}
