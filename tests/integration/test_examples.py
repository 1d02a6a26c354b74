"""The configs in examples/ parse, pass `cdc-bridge check` and `triggers status` against
a real database holding their schema, install on it, and mean what their comments say; the
README walkthrough's configs do what the README shows.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc_bridge.capture.check import check_database
from cdc_bridge.capture.render import render_install
from cdc_bridge.capture.status import has_drift, trigger_status
from cdc_bridge.config import BridgeConfig, Owner, TableMode, parse_config
from tests import pg
from tests.helpers import SECRET

EXAMPLES = Path(__file__).parents[2] / "examples"

# Each example config and the sample schema it is written for.
SCHEMA_OF = {
    "erp.yaml": "schema-erp.sql",
    "shop.yaml": "schema-shop.sql",
    "one-way.yaml": "schema-erp.sql",
    "handoff.yaml": "schema-shop.sql",
    "per-field.yaml": "schema-erp.sql",
    "both-fields.yaml": "schema-erp.sql",
    "docker/erp.yaml": "schema-erp.sql",
    "docker/shop.yaml": "schema-shop.sql",
    "erp-commerce-api.yaml": "schema-erp-api.sql",
}

MIRROR_MODE = {
    TableMode.LOCAL: TableMode.PEER,
    TableMode.PEER: TableMode.LOCAL,
    TableMode.HANDOFF: TableMode.ADOPT,
    TableMode.ADOPT: TableMode.HANDOFF,
}
MIRROR_OWNER = {Owner.LOCAL: Owner.PEER, Owner.PEER: Owner.LOCAL, Owner.BOTH: Owner.BOTH}


def load_example(name: str, dsn: str = "postgresql://cdc@127.0.0.1/unused") -> BridgeConfig:
    environ = {"ERP_DATABASE_URL": dsn, "SHOP_DATABASE_URL": dsn, "BRIDGE_SECRET": SECRET}
    return parse_config((EXAMPLES / name).read_text(encoding="utf-8"), name, environ)


@pytest.fixture(scope="module")
def schema_templates(pg_server: pg.TestServer) -> dict[str, str]:
    """One template database per example schema, built once for this module."""
    templates = {}
    for schema in sorted(set(SCHEMA_OF.values())):
        name = pg_server.new_name("example")
        dsn = pg_server.create_database(name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute((EXAMPLES / schema).read_text(encoding="utf-8"))
        templates[schema] = name
    return templates


@pytest.fixture
def new_database(pg_server: pg.TestServer, schema_templates: dict[str, str]) -> Iterator[Any]:
    created: list[str] = []

    def create(schema: str) -> str:
        name = pg_server.new_name("ex")
        created.append(name)
        return pg_server.create_database(name, template=schema_templates[schema])

    yield create
    for name in created:
        pg_server.drop_database(name)


def install(config: BridgeConfig) -> None:
    with psycopg.connect(config.database.url.get_secret_value()) as conn:
        conn.execute(render_install(config))


def test_every_example_config_is_covered() -> None:
    found = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.yaml")}
    assert found == set(SCHEMA_OF)


@pytest.mark.parametrize("name", sorted(SCHEMA_OF))
def test_example_installs_on_its_schema(name: str, new_database: Any) -> None:
    dsn = new_database(SCHEMA_OF[name])
    config = load_example(name, dsn)
    with psycopg.connect(dsn) as conn:
        assert check_database(config, conn) == []
    install(config)
    install(config)  # re-running an install is harmless
    with psycopg.connect(dsn) as conn:
        assert not has_drift(trigger_status(config, conn))
        installed = conn.execute(
            "SELECT table_name, relation::text FROM cdc_bridge.installed_tables"
        ).fetchall()
    assert sorted(installed) == sorted(
        (spec.label, spec.name.dotted.removeprefix("public.")) for spec in config.table_specs
    )


@pytest.mark.parametrize(("side", "other"), [("erp.yaml", "shop.yaml")])
def test_pair_rules_mirror_each_other(side: str, other: str) -> None:
    """Different tables and names at each side, the same entities with mirrored rules."""
    mine, theirs = load_example(side), load_example(other)
    assert (mine.system, mine.peer.name) == (theirs.peer.name, theirs.system)
    my_specs = {s.entity: s for s in mine.table_specs if s.part_of is None}
    their_specs = {s.entity: s for s in theirs.table_specs if s.part_of is None}
    assert set(my_specs) == set(their_specs) == {"product", "customer", "order", "order_line"}
    for entity, spec in my_specs.items():
        peer_spec = their_specs[entity]
        assert spec.entity_key == peer_spec.entity_key
        mine_sor, theirs_sor = mine.tables[spec.label].sor, theirs.tables[peer_spec.label].sor
        if isinstance(mine_sor, dict):
            assert isinstance(theirs_sor, dict)
            assert {f: MIRROR_OWNER[o] for f, o in mine_sor.items()} == theirs_sor
            assert spec.conflicts == peer_spec.conflicts  # symmetric policy: same winner
        else:
            assert MIRROR_MODE[mine_sor] == theirs_sor
        # Each field one side holds, the other holds too (in its main or side tables, or
        # in its xref).
        assert entity_fields(mine, entity) == entity_fields(theirs, entity)


def entity_fields(config: BridgeConfig, entity: str) -> set[str]:
    specs = [s for s in config.table_specs if s.entity == entity]
    return {f for s in specs for f in [*(s.fields or {}), *(s.xref or ())]}


@pytest.mark.parametrize(
    ("compose", "local"), [("docker/erp.yaml", "erp.yaml"), ("docker/shop.yaml", "shop.yaml")]
)
def test_compose_configs_have_the_pair_rules(compose: str, local: str) -> None:
    assert load_example(compose).tables == load_example(local).tables


def refused(dsn: str, statement: str) -> str:
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
        conn.execute(statement)
    return str(exc.value)


def outbox(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT table_name, op, key, origin FROM cdc_bridge.outbox ORDER BY id"
        ).fetchall()


def test_pair_captures_and_guards_as_documented(new_database: Any) -> None:
    erp = load_example("erp.yaml", new_database("schema-erp.sql"))
    shop = load_example("shop.yaml", new_database("schema-shop.sql"))
    install(erp)
    install(shop)
    erp_dsn = erp.database.url.get_secret_value()
    shop_dsn = shop.database.url.get_secret_value()
    with psycopg.connect(erp_dsn) as conn:
        conn.execute("INSERT INTO customers VALUES ('CUST-1', 'Ann', 'ann@example.com', NULL, 0)")
        conn.execute("INSERT INTO items VALUES ('ITEM-1', 'Pen', 1.5, 'A', NULL)")
        # Adopted: received only, never shipped.
        conn.execute("INSERT INTO sales_orders VALUES ('ERP-5', 'CUST-1', 'O', 10, now())")
    with psycopg.connect(shop_dsn) as conn, conn.transaction():
        # The customer and product as the bridge applies them for the ERP (origin = erp).
        conn.execute("SET LOCAL cdc_bridge.origin = 'erp'")
        conn.execute("INSERT INTO customers (id, full_name) VALUES (7, 'Ann')")
        conn.execute(
            "INSERT INTO products (id, sku_code, label, gross_price, visible, tax_class) "
            "VALUES (3, 'ITEM-1', 'Pen', 1.79, true, 'standard')"
        )
        conn.execute("INSERT INTO product_prices VALUES (3, 1.5)")
    with psycopg.connect(shop_dsn) as conn:
        conn.execute("INSERT INTO orders (customer_id, total) VALUES (7, 25)")
        conn.execute(
            "INSERT INTO order_lines (order_id, product_id, quantity, unit_price) "
            "SELECT max(id), 3, 2, 12.5 FROM orders"
        )
    assert outbox(erp_dsn) == [
        ("public.customers", "I", {"customer_no": "CUST-1"}, "erp"),
        ("public.items", "I", {"item_no": "ITEM-1"}, "erp"),
    ]
    assert outbox(shop_dsn) == [
        # Captured with the peer's origin (a both-field table), never sent back.
        ("public.customers", "I", {"id": 7}, "erp"),
        ("public.orders", "I", {"id": 1001}, "shop"),
        ("public.order_lines", "I", {"id": 5001}, "shop"),
    ]
    assert "owned by erp" in refused(shop_dsn, "UPDATE products SET label = 'x' WHERE id = 3")
    assert "owned by erp" in refused(shop_dsn, "UPDATE customers SET full_name = 'x' WHERE id = 7")
    # The ERP owns the customer's number, so only the ERP creates customers.
    assert "owned by erp" in refused(shop_dsn, "INSERT INTO customers (full_name) VALUES ('Bo')")
    assert "owned by shop" in refused(
        erp_dsn, "UPDATE customers SET phone = '+1' WHERE customer_no = 'CUST-1'"
    )


def readme_walkthrough_config(name: str, dsn: str) -> BridgeConfig:
    """The config the README's walkthrough writes as `name` (a block headed `# name`)."""
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    blocks = [textwrap.dedent(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)]
    (text,) = [b for b in blocks if b.startswith(f"# {name}\n")]
    environ = {"A_DATABASE_URL": dsn, "B_DATABASE_URL": dsn, "BRIDGE_SECRET": SECRET}
    return parse_config(text, name, environ)


def test_readme_walkthrough_installs_and_behaves_as_described(
    pg_server: pg.TestServer,
) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    dsns = []
    for side in ("a", "b"):
        name = pg_server.new_name(f"walk_{side}")
        dsn = pg_server.create_database(name)
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE public.clients (id bigint PRIMARY KEY, name text)")
        install(readme_walkthrough_config(f"{side}.yaml", dsn))
        dsns.append(dsn)
    a_dsn, b_dsn = dsns
    with psycopg.connect(a_dsn) as conn:
        conn.execute("INSERT INTO clients VALUES (1, 'Ann')")
    with psycopg.connect(b_dsn) as conn, conn.transaction():
        # The row as the bridge would apply it for app_a (origin = the peer).
        conn.execute("SET LOCAL cdc_bridge.origin = 'app_a'")
        conn.execute("INSERT INTO clients VALUES (1, 'Ann')")
    assert outbox(a_dsn) == [("public.clients", "I", {"id": 1}, "app_a")]
    assert outbox(b_dsn) == []
    message = refused(b_dsn, "UPDATE clients SET name = 'Bo' WHERE id = 1").splitlines()[0]
    assert message == "cdc-bridge: public.clients rows are owned by app_a; local update refused"
    assert f"`ERROR: {message}`" in readme.replace("\n   ", " ")
