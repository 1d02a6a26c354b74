"""Entity mappings: what the config refuses (exit 2, naming key and fix), and the pure
translation between this side's columns and the entity's fields."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import yaml

from cdc_bridge.config import parse_config
from cdc_bridge.entity import EntityMap
from cdc_bridge.errors import ConfigError, Unmapped, Unresolved

BASE: dict[str, Any] = {
    "system": "erp",
    "database": {"url": "postgresql://localhost/erp"},
    "peer": {"name": "shop", "url": "http://127.0.0.1:8082", "secret": "s"},
}

ITEMS: dict[str, Any] = {
    "entity": "product",
    "key": ["item_no"],
    "sor": "local",
    "fields": {
        "sku": "item_no",
        "name": "description",
        "visible": {"column": "status", "map": {"A": True, "I": False}},
        "gross": {"expr": "round(unit_price * 1.2, 2)"},
    },
}


def config_of(tables: dict[str, Any]) -> Any:
    return parse_config(yaml.safe_dump({**BASE, "tables": tables}), "erp.yaml", {})


def problems_of(tables: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_of(tables)
    assert caught.value.path == "erp.yaml"
    return caught.value.problems


def test_a_twin_table_is_its_own_entity_and_ships_as_it_is() -> None:
    spec = config_of({"public.customers": {"key": ["id"], "sor": "local"}}).table(
        "public.customers"
    )
    assert (spec.entity, spec.mapped, spec.entity_key) == ("public.customers", False, ("id",))
    emap = EntityMap.of(spec)
    row = {"id": 1, "name": "Ann", "limit": Decimal("1.10")}
    assert emap.outbound_values(row, {}) == row
    assert emap.inbound_values(row, {}) == row


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            {**ITEMS, "sor": "peer"},
            "computed field(s) gross are shipped only (one-way), but the config has this "
            "side receive them; fix: make them `local` in sor",
        ),
        (
            {**ITEMS, "sor": {"sku": "local", "name": "local", "gross": "peer"}},
            "computed field(s) gross are shipped only",
        ),
        (
            {**ITEMS, "fields": {**ITEMS["fields"], "visible": {"column": "status",
                                                             "map": {"A": True, "B": True}}}},
            "map gives True for more than one value",
        ),
        (
            {**ITEMS, "sor": {"sku": "local", "price": "local"}},
            "sor names price, which `fields` does not map; fix: write sor per entity field",
        ),
        (
            {**ITEMS, "fields": {"name": "description"}},
            "key column(s) item_no are not mapped to a field",
        ),
        (
            {**ITEMS, "xref": ["sku", "other"]},
            "`xref` keeps a one-field entity key",
        ),
        (
            {**ITEMS, "fields": {**ITEMS["fields"], "owner": {"column": "owner_no",
                                                            "ref": "customer"}}},
            "no table holds entity 'customer'",
        ),
    ],
)
def test_a_bad_mapping_is_refused_naming_key_and_fix(table: dict[str, Any], expected: str) -> None:
    problems = problems_of({"public.items": table})
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("tables.") for p in problems), problems


def test_two_tables_may_not_hold_one_entity() -> None:
    problems = problems_of(
        {"public.items": ITEMS, "public.items_old": {**ITEMS, "key": ["item_no"]}}
    )
    assert any("all hold entity 'product'" in p for p in problems), problems


def test_values_are_renamed_and_mapped_both_ways() -> None:
    emap = EntityMap.of(config_of({"public.items": ITEMS}).table("public.items"))
    row = {"item_no": "I-1", "description": "Drill", "status": "A", "unit_price": Decimal("9")}
    shipped = emap.outbound_values(row, {})
    assert shipped == {"sku": "I-1", "name": "Drill", "visible": True}
    assert emap.outbound_key({"item_no": "I-1"}, {}) == {"sku": "I-1"}
    assert emap.inbound_values(shipped, {}) == {
        "item_no": "I-1", "description": "Drill", "status": "A"
    }
    assert emap.inbound_key({"sku": "I-1"}) == {"item_no": "I-1"}


def test_an_unmapped_value_is_refused_naming_entity_field_and_value() -> None:
    emap = EntityMap.of(config_of({"public.items": ITEMS}).table("public.items"))
    with pytest.raises(Unmapped) as out:
        emap.outbound_values({"status": "D"}, {})
    assert str(out.value) == (
        "product.visible: value 'D' has no mapping from public.items.status; fix: add it to "
        "the field's `map`"
    )
    with pytest.raises(Unmapped, match=r"product.visible: value 'maybe' has no mapping to"):
        emap.inbound_values({"visible": "maybe"}, {})


def test_a_reference_that_has_not_arrived_is_refused_never_applied_dangling() -> None:
    tables = {
        "public.orders": {
            "entity": "order", "key": ["id"], "xref": ["number"], "sor": "adopt",
            "fields": {"customer": {"column": "customer_id", "ref": "customer"}},
        },
        "public.customers": {
            "entity": "customer", "key": ["id"], "xref": ["number"], "sor": "peer",
            "fields": {"name": "full_name"},
        },
    }
    emap = EntityMap.of(config_of(tables).table("public.orders"))
    assert emap.inbound_values({"customer": "C-1"}, {("customer", "C-1"): 42}) == {
        "customer_id": 42
    }
    with pytest.raises(Unresolved, match="refers to customer 'C-1', which has not arrived"):
        emap.inbound_values({"customer": "C-1"}, {("customer", "C-1"): None})


PRICES: dict[str, Any] = {
    "entity": "product",
    "part_of": "public.items",
    "key": ["item_no"],
    "sor": "local",
    "fields": {"price": "unit_price"},
}


@pytest.mark.parametrize(
    ("prices", "expected"),
    [
        ({**PRICES, "part_of": "public.nowhere"}, "'public.nowhere' is not a main table"),
        ({**PRICES, "entity": "price"}, "a side table holds the same entity as public.items"),
        ({**PRICES, "key": ["item_no", "line"]}, "a key of as many columns (1)"),
        ({**PRICES, "fields": {"name": "label"}}, "field(s) name are held by public.items too"),
        ({**PRICES, "xref": ["sku"]}, "has no `xref` of its own"),
    ],
)
def test_a_bad_side_table_is_refused(prices: dict[str, Any], expected: str) -> None:
    problems = problems_of({"public.items": ITEMS, "public.item_prices": prices})
    assert any(expected in p for p in problems), problems


def test_a_side_table_row_deleted_alone_is_not_shipped_and_says_so() -> None:
    from datetime import UTC, datetime

    from cdc_bridge.outbox import OutboxRow
    from cdc_bridge.relay.sor import Drop, decide

    spec = config_of({"public.items": ITEMS, "public.item_prices": PRICES}).table(
        "public.item_prices"
    )
    row = OutboxRow(
        1, "7", "public.item_prices", "D", {"item_no": "I-1"}, "", None, None, None, "erp",
        datetime.now(UTC),
    )
    decision = decide(row, spec, "erp")
    assert isinstance(decision, Drop) and decision.diverges
    assert "the record is deleted through public.items" in decision.reason
