"""Two different applications kept in step: an ERP (natural keys, one-letter codes) and a
web shop (generated ids, words for codes, other names), mapped by config alone.

Each side's rows are compared as `row(...)::text` of the columns that hold the same
entity fields, so a rename, a code map, a key translation or a rounding shows as a
difference.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from cdc_bridge.config import load_config
from cdc_bridge.ops.reconcile import reconcile
from tests.acceptance.bridges import Bridge, relays_paused, wait_until
from tests.acceptance.unlike_pair import unlike_pair
from tests.pg import TestServer

# 30 digits in a jsonb document and in a numeric(38,6): exact or it fails.
BIG = "123456789012345678901234567890"

ERP_PRODUCTS = """
SELECT row(item_no, description, unit_price, round(unit_price * 1.2, 2), status = 'A',
           attributes)::text
FROM items WHERE status <> 'D' ORDER BY item_no
"""
SHOP_PRODUCTS = """
SELECT row(p.sku_code, p.label, pp.net_price, p.gross_price, p.visible, p.specs)::text
FROM products p JOIN product_prices pp ON pp.product_id = p.id ORDER BY p.sku_code
"""
# The shop's customers by the ERP's number, through the bridge's cross-reference.
SHOP_CUSTOMERS = """
SELECT row(x.entity_key ->> 'number', c.full_name, c.email_address, c.phone, p.tier)::text
FROM customers c
LEFT JOIN customer_profiles p ON p.customer_id = c.id
JOIN cdc_bridge.entity_xref x
  ON x.entity = 'customer' AND x.local_key = jsonb_build_object('id', c.id)
ORDER BY 1
"""
ERP_CUSTOMERS = """
SELECT row(customer_no, name, email, phone, loyalty)::text FROM customers ORDER BY 1
"""
ERP_ORDERS = """
SELECT row(order_no, customer_no, state, total, placed_at)::text FROM sales_orders ORDER BY 1
"""
SHOP_ORDERS = """
SELECT row('shop-' || o.id, x.entity_key ->> 'number',
           CASE o.status WHEN 'open' THEN 'O' WHEN 'shipped' THEN 'S' ELSE 'C' END,
           o.total, o.created_at)::text
FROM orders o
JOIN cdc_bridge.entity_xref x
  ON x.entity = 'customer' AND x.local_key = jsonb_build_object('id', o.customer_id)
WHERE o.status <> 'cancelled'
ORDER BY 1
"""


def rows(bridge: Bridge, query: str) -> list[str]:
    return [r[0] for r in bridge.sql(query)]


def equal(erp: Bridge, erp_query: str, shop: Bridge, shop_query: str) -> bool:
    return rows(erp, erp_query) == rows(shop, shop_query)


def failed(bridge: Bridge) -> list[tuple[str, str]]:
    return [
        (r[0], r[1]) for r in bridge.sql("SELECT table_name, reason FROM cdc_bridge.failed")
    ]


@pytest.fixture
def pair(pg_server: TestServer, tmp_path: Path) -> tuple[Bridge, Bridge]:
    with unlike_pair(pg_server, tmp_path) as bridges:
        yield bridges  # type: ignore[misc]


def test_four_sync_paths_between_two_unlike_schemas(pair: tuple[Bridge, Bridge]) -> None:
    erp, shop = pair
    both = [erp, shop]
    # 1-way, one SOR: ERP items arrive as shop products (renamed, code-mapped, computed,
    # defaulted), in one source transaction with the customers.
    with psycopg.connect(erp.dsn) as conn:
        conn.execute(
            "INSERT INTO customers VALUES "
            "('CUST-1042', 'Anna Müller', 'anna@example.com', NULL, %s),"
            "('CUST-2001', 'Bo Ek', NULL, NULL, 0)",
            (BIG + ".000001",),
        )
        conn.execute(
            "INSERT INTO items VALUES "
            "('ITEM-1', 'Drill 🔩', 12345678901234.123456, 'A', %s::jsonb),"
            "('ITEM-2', 'Saw', 1.10, 'I', NULL)",
            ('{"weight": ' + BIG + ', "tags": ["tools", "ß"]}',),
        )
    wait_until("products at the shop", lambda: len(rows(shop, SHOP_PRODUCTS)) == 2, both)
    assert rows(shop, SHOP_PRODUCTS) == rows(erp, ERP_PRODUCTS)
    assert shop.sql("SELECT DISTINCT tax_class FROM products") == [("standard",)]
    wait_until("customers at the shop", lambda: len(rows(shop, SHOP_CUSTOMERS)) == 2, both)
    assert rows(shop, SHOP_CUSTOMERS) == rows(erp, ERP_CUSTOMERS)
    anna = shop.value("SELECT id FROM customers WHERE full_name = 'Anna Müller'")

    # SOR handoff: an order born in the shop, with a change of the shop-owned phone in the
    # same transaction, arrives with the ERP's customer number and the ERP's state code.
    with psycopg.connect(shop.dsn) as conn:
        order = conn.execute(
            "INSERT INTO orders (customer_id, total, created_at) "
            "VALUES (%s, 99999999999999.999999, '2026-03-29 01:30:00+01') RETURNING id",
            (anna,),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE customers SET phone = '+49 30 1234' WHERE id = %s", (anna,))
        # A row of the customers' 1:1 side table ships as a change of the customer.
        conn.execute("INSERT INTO customer_profiles VALUES (%s, 'gold')", (anna,))
    wait_until("the order at the ERP", lambda: equal(erp, ERP_ORDERS, shop, SHOP_ORDERS), both)
    assert erp.sql("SELECT order_no, customer_no, state FROM sales_orders") == [
        (f"shop-{order}", "CUST-1042", "O")
    ]
    wait_until(
        "the phone at the ERP", lambda: equal(erp, ERP_CUSTOMERS, shop, SHOP_CUSTOMERS), both
    )
    wait_until(
        "the handoff recorded",
        lambda: shop.value("SELECT count(*) FROM cdc_bridge.handoffs") == 1,
        both,
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        shop.sql("UPDATE orders SET total = 1 WHERE id = %s", order)

    # The shop's generated ids carried by the cross-reference: the ERP's later update and
    # delete reach the right shop rows.
    erp.sql(
        "UPDATE customers SET name = 'Anna Müller-Lüdenscheidt' WHERE customer_no = 'CUST-1042'"
    )
    erp.sql("DELETE FROM customers WHERE customer_no = 'CUST-2001'")
    wait_until(
        "the rename and the delete at the shop",
        lambda: equal(erp, ERP_CUSTOMERS, shop, SHOP_CUSTOMERS),
        both,
    )
    assert shop.value("SELECT id FROM customers WHERE full_name LIKE 'Anna%'") == anna
    shop.sql("UPDATE customer_profiles SET tier = 'platinum' WHERE customer_id = %s", anna)
    wait_until("the tier at the ERP", lambda: equal(erp, ERP_CUSTOMERS, shop, SHOP_CUSTOMERS), both)
    assert erp.value("SELECT loyalty FROM customers WHERE customer_no = 'CUST-1042'") == (
        "platinum"
    )

    # 2-way, two SORs for a field: both edit the email while the relays are held; newer
    # wins at both sides.
    with relays_paused(erp, shop):
        shop.sql("UPDATE customers SET email_address = 'old@shop.example' WHERE id = %s", anna)
        erp.sql("UPDATE customers SET email = 'new@erp.example' WHERE customer_no = 'CUST-1042'")
    wait_until(
        "the email converged",
        lambda: equal(erp, ERP_CUSTOMERS, shop, SHOP_CUSTOMERS),
        both,
    )
    assert erp.value("SELECT email FROM customers WHERE customer_no = 'CUST-1042'") == (
        "new@erp.example"
    )
    assert failed(erp) == [] and failed(shop) == []


def test_an_unmapped_code_is_refused_with_a_reason_and_blocks_nothing_else(
    pair: tuple[Bridge, Bridge],
) -> None:
    erp, shop = pair
    both = [erp, shop]
    # Outbound: the ERP's 'D' (discontinued) has no value in the shop's vocabulary.
    erp.sql("INSERT INTO items VALUES ('ITEM-9', 'Old saw', 5, 'D', NULL)")
    erp.sql("INSERT INTO items VALUES ('ITEM-3', 'Hammer', 7.5, 'A', NULL)")
    wait_until("the good item at the shop", lambda: len(rows(shop, SHOP_PRODUCTS)) == 1, both)
    assert rows(shop, SHOP_PRODUCTS) == rows(erp, ERP_PRODUCTS)
    wait_until("the bad item failed", lambda: len(failed(erp)) == 1, both)
    [(table, reason)] = failed(erp)
    assert table == "public.items"
    assert "product.visible" in reason and "'D'" in reason and "map" in reason

    # `batches show` names the entity and, for each field, the column it came from.
    listed = json.loads(erp.cli("batches", "list", "--json").stdout)
    [batch] = [b["batch_id"] for b in listed if b["status"] == "delivered"]
    shown = erp.cli("batches", "show", batch)
    assert shown.returncode == 0, shown.stderr
    assert (
        'ships entity product: sku <- item_no = "ITEM-3", name <- description = "Hammer", '
        'price <- unit_price = 7.500000, visible <- status = "A"' in shown.stdout
    ), shown.stdout
    detail = json.loads(erp.cli("batches", "show", batch, "--json").stdout)
    assert detail["changes"][0]["entity"] == "product"
    assert {"field": "visible", "column": "status", "value": "A"} in detail["changes"][0][
        "entity_fields"
    ]

    # Inbound: the shop's 'cancelled' has no code at the ERP.
    erp.sql("INSERT INTO customers VALUES ('CUST-7', 'Cy', NULL, NULL, NULL)")
    wait_until("the customer at the shop", lambda: len(rows(shop, SHOP_CUSTOMERS)) == 1, both)
    cy = shop.value("SELECT id FROM customers")
    shop.sql("INSERT INTO orders (customer_id, status, total) VALUES (%s, 'cancelled', 1)", cy)
    shop.sql("INSERT INTO orders (customer_id, total) VALUES (%s, 2)", cy)
    wait_until("the good order at the ERP", lambda: equal(erp, ERP_ORDERS, shop, SHOP_ORDERS), both)
    assert erp.value("SELECT count(*) FROM sales_orders") == 1
    wait_until("the bad order failed", lambda: len(failed(shop)) == 1, both)
    [(table, reason)] = failed(shop)
    assert table == "public.orders"
    assert "order.state" in reason and "'cancelled'" in reason


def test_reconcile_finds_and_fixes_a_mapped_difference(pair: tuple[Bridge, Bridge]) -> None:
    erp, shop = pair
    both = [erp, shop]
    erp.sql(
        "INSERT INTO items VALUES ('ITEM-1', 'Drill', 12345678901234.123456, 'A', NULL),"
        "('ITEM-2', 'Saw', 1.10, 'I', %s::jsonb), ('ITEM-3', 'Vice', 3, 'A', NULL)",
        '{"n": ' + BIG + "}",
    )
    wait_until("products at the shop", lambda: len(rows(shop, SHOP_PRODUCTS)) == 3, both)
    config = load_config(erp.config)
    assert reconcile(config, "public.items").in_sync

    # The shop's copy drifts: a rounded price, a flipped code, a lost row and a stray one.
    shop.execute(
        "UPDATE product_prices SET net_price = 12345678901234.123000 "
        "WHERE product_id = (SELECT id FROM products WHERE sku_code = 'ITEM-1')",
        "UPDATE products SET visible = true WHERE sku_code = 'ITEM-2'",
        "DELETE FROM products WHERE sku_code = 'ITEM-3'",
        "INSERT INTO products (sku_code, label, visible, tax_class) "
        "VALUES ('ITEM-X', 'Stray', true, 'standard')",
        origin="erp",  # as the shop's bridge writes: its guard lets it pass
    )
    report = reconcile(config, "public.items")
    assert (report.different, report.missing, report.extra) == (2, 1, 1)
    by_sku = {d.key["sku"]: d.fields for d in report.differences}
    assert by_sku["ITEM-1"] == {
        "price": (Decimal("12345678901234.123456"), Decimal("12345678901234.123000"))
    }
    assert by_sku["ITEM-2"] == {"visible": (False, True)}  # compared as the entity's values
    assert report.missing_keys == [{"sku": "ITEM-3"}]
    assert report.extra_keys == [{"sku": "ITEM-X"}]

    fixed = reconcile(config, "public.items", fix=True)
    assert fixed.fixes_queued == 4  # three upserts and the stray one's delete
    wait_until(
        "the shop repaired", lambda: rows(shop, SHOP_PRODUCTS) == rows(erp, ERP_PRODUCTS), both
    )
    after = reconcile(config, "public.items")
    assert after.in_sync and after.compared == 3


def test_snapshot_ships_rows_that_predate_the_bridge_as_entities(
    pair: tuple[Bridge, Bridge],
) -> None:
    erp, shop = pair
    # Rows the ERP held before the bridge: written with its capture switched off.
    erp.execute(
        "ALTER TABLE items DISABLE TRIGGER USER",
        "INSERT INTO items SELECT 'OLD-' || g, 'Old item ' || g, g * 1.25, "
        "CASE WHEN g % 2 = 0 THEN 'A' ELSE 'I' END, NULL FROM generate_series(1, 40) g",
        "ALTER TABLE items ENABLE TRIGGER USER",
    )
    done = erp.cli("snapshot", "public.items")
    assert done.returncode == 0, done.stderr
    wait_until(
        "the snapshot at the shop",
        lambda: rows(shop, SHOP_PRODUCTS) == rows(erp, ERP_PRODUCTS),
        [erp, shop],
    )
    assert len(rows(shop, SHOP_PRODUCTS)) == 40


def test_a_side_table_s_refusal_is_the_change_s_own_reason(pair: tuple[Bridge, Bridge]) -> None:
    erp, shop = pair
    both = [erp, shop]
    erp.sql("INSERT INTO items VALUES ('ITEM-BAD', 'Devil', 666, 'A', NULL)")
    erp.sql("INSERT INTO items VALUES ('ITEM-OK', 'Oar', 10, 'A', NULL)")
    wait_until("the good item at the shop", lambda: len(rows(shop, SHOP_PRODUCTS)) == 1, both)
    wait_until("the refused item failed", lambda: len(failed(erp)) == 1, both)
    [(table, reason)] = failed(erp)
    assert table == "public.items"
    assert "product_prices_net_price_check" in reason, reason
    assert not reason.startswith("not applied"), reason
    assert shop.value("SELECT count(*) FROM products WHERE sku_code = 'ITEM-BAD'") == 0
