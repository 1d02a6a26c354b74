"""The ERP <-> shop pair of examples/ on its four sync paths, beyond the demo's story:
orders and lines across transactions, a line added to a handed-off order, a line edited
before its order was handed off, a product deactivated and deleted.

Every outcome is checked as each side's records compared as text (example_pair.py), and
against the ERP's own numbers written out here.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.acceptance.bridges import Bridge, relays_paused, wait_until
from tests.acceptance.example_pair import differences, example_pair
from tests.pg import TestServer

# 30 digits inside a jsonb document: every digit or it fails.
BIG = "123456789012345678901234567890"


@pytest.fixture
def pair(pg_server: TestServer, tmp_path: Path) -> tuple[Bridge, Bridge]:
    with example_pair(pg_server, tmp_path) as bridges:
        yield bridges  # type: ignore[misc]


def converged(erp: Bridge, shop: Bridge) -> bool:
    return differences(erp.dsn, shop.dsn) == {}


def failed(bridge: Bridge) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in bridge.sql("SELECT table_name, reason FROM cdc_bridge.failed")]


def place_order(shop: Bridge, customer: int, lines: list[tuple[int, int, str]]) -> int:
    """One shop transaction: an order and its lines (product id, quantity, unit price)."""
    with psycopg.connect(shop.dsn) as conn:
        row = conn.execute(
            "INSERT INTO orders (customer_id, total, created_at) "
            "VALUES (%s, 99999999999999.999999, '2026-03-29 01:30:00+01') RETURNING id",
            (customer,),
        ).fetchone()
        assert row is not None
        for product, quantity, price in lines:
            conn.execute(
                "INSERT INTO order_lines (order_id, product_id, quantity, unit_price) "
                "VALUES (%s, %s, %s, %s)",
                (row[0], product, quantity, price),
            )
    return int(row[0])


def test_orders_and_lines_keep_their_references_across_transactions(
    pair: tuple[Bridge, Bridge],
) -> None:
    erp, shop = pair
    both = [erp, shop]
    with psycopg.connect(erp.dsn) as conn:
        conn.execute(
            "INSERT INTO customers VALUES ('CUST-1042', 'Anna Müller', NULL, NULL, %s)",
            (BIG + ".000001",),
        )
        conn.execute(
            "INSERT INTO items VALUES ('ITEM-1', 'Drill', 12345678901234.123456, 'A', %s::jsonb),"
            "('ITEM-2', 'Saw', 1.10, 'A', NULL), ('ITEM-3', 'Rasp', 3, 'A', NULL)",
            ('{"weight": ' + BIG + "}",),
        )
    wait_until("the catalogue at the shop", lambda: converged(erp, shop), both)
    assert shop.value("SELECT count(*) FROM products") == 3
    anna = shop.value("SELECT id FROM customers")
    product = dict(shop.sql("SELECT sku_code, id FROM products"))

    # An order and its lines in one transaction, then a line added to it in another, after
    # the order was handed off: the new line still refers to the ERP's order number.
    order = place_order(
        shop, anna, [(product["ITEM-1"], 2, "12345678901234.123456"), (product["ITEM-2"], 1, "1.1")]
    )
    wait_until(
        "the order handed off",
        lambda: shop.value("SELECT count(*) FROM cdc_bridge.handoffs") == 3,
        both,
    )
    shop.sql(
        "INSERT INTO order_lines (order_id, product_id, quantity, unit_price) "
        "VALUES (%s, %s, 5, 3)",
        order,
        product["ITEM-3"],
    )
    wait_until("the added line at the ERP", lambda: converged(erp, shop), both)
    lines = shop.sql("SELECT id FROM order_lines ORDER BY id")
    assert erp.sql(
        "SELECT line_no, order_no, item_no, quantity FROM sales_order_lines ORDER BY line_no"
    ) == [
        (f"shop-{lines[0][0]}", f"shop-{order}", "ITEM-1", 2),
        (f"shop-{lines[1][0]}", f"shop-{order}", "ITEM-2", 1),
        (f"shop-{lines[2][0]}", f"shop-{order}", "ITEM-3", 5),
    ]
    assert erp.sql("SELECT order_no, customer_no, state FROM sales_orders") == [
        (f"shop-{order}", "CUST-1042", "O")
    ]

    # An order edited before it was handed off (the relays held): its line's quantity and
    # product change in a second transaction, and the ERP ends with the latest of both.
    with relays_paused(erp, shop):
        edited = place_order(shop, anna, [(product["ITEM-2"], 1, "1.1")])
        shop.sql(
            "UPDATE order_lines SET quantity = 4, product_id = %s WHERE order_id = %s",
            product["ITEM-3"],
            edited,
        )
    wait_until("the edited order at the ERP", lambda: converged(erp, shop), both)
    assert erp.sql(
        "SELECT item_no, quantity FROM sales_order_lines WHERE order_no = %s", f"shop-{edited}"
    ) == [("ITEM-3", 4)]

    # The ERP deactivates an item (a code) and deletes one no line refers to: the shop's
    # product rows are found through the cross-reference.
    erp.sql("INSERT INTO items VALUES ('ITEM-9', 'Spare', 9, 'A', NULL)")
    wait_until("ITEM-9 at the shop", lambda: converged(erp, shop), both)
    erp.sql("UPDATE items SET status = 'I' WHERE item_no = 'ITEM-2'")
    erp.sql("DELETE FROM items WHERE item_no = 'ITEM-9'")
    wait_until("the deactivation and the delete", lambda: converged(erp, shop), both)
    assert shop.sql("SELECT sku_code, visible FROM products ORDER BY sku_code") == [
        ("ITEM-1", True),
        ("ITEM-2", False),
        ("ITEM-3", True),
    ]
    assert failed(erp) == [] and failed(shop) == []
