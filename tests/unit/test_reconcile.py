"""Reconcile's value comparison: JSON equality with numbers compared by value."""

from __future__ import annotations

from decimal import Decimal

from cdc_bridge.ops.peer_read import loads
from cdc_bridge.ops.reconcile import differing_fields, json_equal, key_token


def test_numbers_compare_by_value() -> None:
    assert json_equal(loads("1.50"), loads("1.5"))
    assert json_equal(1, Decimal("1.000"))
    assert json_equal(loads('{"a": [1.10, 2]}'), {"a": [1.1, 2.0]})
    assert not json_equal(loads("1.51"), loads("1.5"))


def test_exact_decimals_are_not_rounded() -> None:
    assert not json_equal(loads("12345678901234567.01"), loads("12345678901234567.02"))


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


def test_differing_fields_skip_columns_the_peer_lacks() -> None:
    ours = {"id": 1, "name": "a", "price": Decimal("1.50"), "internal": "x"}
    theirs = {"id": 1, "name": "b", "price": 1.5}
    assert differing_fields(ours, theirs) == {"name": ("a", "b")}
