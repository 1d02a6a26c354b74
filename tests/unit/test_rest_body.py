"""REST bodies from a change: nested pointers, constants, casts, partial updates."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from cdc_bridge.config import RestTableMapping
from cdc_bridge.errors import BodyError
from cdc_bridge.peer.rest import body_of, pointed_id


def mapping(body: dict[str, Any] | None, **other: Any) -> RestTableMapping:
    return RestTableMapping.model_validate({"body": body, **other})


BODY = {
    "/sku": "sku",
    "/regular_price": {"field": "price", "cast": "string", "scale": 2},
    "/stock/quantity": {"field": "stock", "cast": "integer"},
    "/stock/managed": {"const": True},
    "/weight": {"field": "weight", "cast": "number"},
}


def test_nested_body_with_casts_and_constants() -> None:
    fields = {"sku": "P1", "price": Decimal("12.5"), "stock": 3, "weight": "0.125000"}
    assert body_of(mapping(BODY), fields) == {
        "sku": "P1",
        "regular_price": "12.50",
        "stock": {"quantity": 3, "managed": True},
        "weight": Decimal("0.125000"),
    }


def test_money_is_rounded_half_even_to_the_scale_and_thirty_digits_stay_exact() -> None:
    body = mapping({"/p": {"field": "p", "cast": "string", "scale": 2}})
    assert body_of(body, {"p": Decimal("2.345")}) == {"p": "2.34"}
    assert body_of(body, {"p": Decimal("123456789012345678901234567890.005")}) == {
        "p": "123456789012345678901234567890.00"
    }


def test_a_partial_update_leaves_out_fields_it_does_not_carry() -> None:
    assert body_of(mapping(BODY), {"sku": "P1", "price": 2}) == {
        "sku": "P1",
        "regular_price": "2.00",
        "stock": {"managed": True},
    }


def test_a_value_that_cannot_be_cast_names_the_field() -> None:
    with pytest.raises(BodyError, match="stock = 'many' cannot be cast to integer"):
        body_of(mapping(BODY), {"stock": "many"})


def test_without_a_body_map_the_fields_are_renamed() -> None:
    assert body_of(mapping(None, rename={"name": "title"}), {"name": "Pen", "x": 1}) == {
        "title": "Pen",
        "x": 1,
    }


def test_ids_are_found_by_pointer_as_text() -> None:
    assert pointed_id({"id": 17}, "/id") == "17"
    assert pointed_id([{"id": "a-1"}], "/0/id") == "a-1"
    assert pointed_id([], "/0/id") is None
    assert pointed_id({"id": {"nested": 1}}, "/id") is None
