"""The ERP <-> shop pair of examples/ (two unlike schemas), each side with its own bridge,
and each entity's records as text at both sides.

A projection gives one `row(...)::text` per record, of the fields both sides hold: the
shop's customer and product ids are read back as the ERP's keys through the bridge's
cross-reference, orders and lines by the key the shop's relay gives a record born there
(`shop-<id>`); a shop product's net price is in its 1:1 side table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.acceptance.bridges import Bridge, create_app_database, start_pair
from tests.helpers import SECRET
from tests.integration.inbound_support import free_port
from tests.pg import TestServer

EXAMPLES = Path(__file__).parents[2] / "examples"

# (ERP projection, shop projection) per entity.
PROJECTIONS = {
    "product": (
        """SELECT row(item_no, item_no, description, unit_price, round(unit_price * 1.19, 2),
                      status = 'A', attributes)::text
           FROM items ORDER BY item_no""",
        """SELECT row(x.entity_key ->> 'sku', p.sku_code, p.label, pp.net_price, p.gross_price,
                      p.visible, p.specs)::text
           FROM products p JOIN product_prices pp ON pp.product_id = p.id
           JOIN cdc_bridge.entity_xref x
             ON x.entity = 'product' AND x.local_key = jsonb_build_object('id', p.id)
           ORDER BY 1""",
    ),
    "customer": (
        "SELECT row(customer_no, name, email, phone)::text FROM customers ORDER BY 1",
        """SELECT row(x.entity_key ->> 'number', c.full_name, c.email_address, c.phone)::text
           FROM customers c JOIN cdc_bridge.entity_xref x
             ON x.entity = 'customer' AND x.local_key = jsonb_build_object('id', c.id)
           ORDER BY 1""",
    ),
    "order": (
        "SELECT row(order_no, customer_no, total, placed_at)::text FROM sales_orders ORDER BY 1",
        """SELECT row('shop-' || o.id, x.entity_key ->> 'number', o.total, o.created_at)::text
           FROM orders o JOIN cdc_bridge.entity_xref x
             ON x.entity = 'customer' AND x.local_key = jsonb_build_object('id', o.customer_id)
           ORDER BY 1""",
    ),
    "order_line": (
        """SELECT row(line_no, order_no, item_no, quantity, unit_price)::text
           FROM sales_order_lines ORDER BY 1""",
        """SELECT row('shop-' || l.id, 'shop-' || l.order_id, x.entity_key ->> 'sku',
                      l.quantity::numeric(20,6), l.unit_price)::text
           FROM order_lines l JOIN cdc_bridge.entity_xref x
             ON x.entity = 'product' AND x.local_key = jsonb_build_object('id', l.product_id)
           ORDER BY 1""",
    ),
}


def texts(dsn: str, query: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(query.encode()).fetchall()]


def differences(erp_dsn: str, shop_dsn: str) -> dict[str, tuple[list[str], list[str]]]:
    """Entity -> (ERP rows, shop rows), for each entity whose records differ."""
    found = {}
    for entity, (erp_query, shop_query) in PROJECTIONS.items():
        erp, shop = texts(erp_dsn, erp_query), texts(shop_dsn, shop_query)
        if erp != shop:
            found[entity] = (erp, shop)
    return found


def example_config_text(side: str, dsn: str, ports: dict[str, tuple[int, int]]) -> str:
    """examples/<side>.yaml for this database and these ports, relaying without delay."""
    text = (EXAMPLES / f"{side}.yaml").read_text()
    defaults = {"erp": (8081, 9181), "shop": (8082, 9182)}
    for name, (listen, metrics) in defaults.items():
        text = text.replace(f"127.0.0.1:{listen}", f"127.0.0.1:{ports[name][0]}")
        text = text.replace(
            f'metrics_listen: "127.0.0.1:{metrics}"',
            f'metrics_listen: "127.0.0.1:{ports[name][1]}"\n  poll_interval_s: 0.5\n'
            "  max_wait_ms: 5\n  retry_initial_s: 0.05\n  retry_max_s: 0.5",
        )
    for name in ("ERP_DATABASE_URL", "SHOP_DATABASE_URL"):
        text = text.replace("${" + name + "}", dsn)
    return text.replace("${BRIDGE_SECRET}", SECRET)


@contextlib.contextmanager
def example_pair(pg_server: TestServer, workdir: Path) -> Iterator[tuple[Bridge, Bridge]]:
    """(erp, shop) on the examples' schemas, installed with `sql render`, both running."""
    ports = {side: (free_port(), free_port()) for side in ("erp", "shop")}
    names = {side: pg_server.new_name(side) for side in ("erp", "shop")}
    bridges: list[Bridge] = []
    try:
        for side in ("erp", "shop"):
            dsn = create_app_database(pg_server, names[side], EXAMPLES / f"schema-{side}.sql")
            path = workdir / f"{side}.yaml"
            path.write_text(example_config_text(side, dsn, ports))
            bridge = Bridge(side, dsn, path, workdir)
            rendered = bridge.cli("sql", "render")
            assert rendered.returncode == 0, rendered.stderr
            with psycopg.connect(dsn) as conn:
                conn.execute(rendered.stdout.encode())
            bridges.append(bridge)
        start_pair(bridges, ports)
        yield bridges[0], bridges[1]
    finally:
        for bridge in bridges:
            bridge.stop()
        for name in names.values():
            pg_server.drop_database(name)
