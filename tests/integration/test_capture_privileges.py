"""Least privilege: an application role with no grant of its own writes to synced tables and
is captured. With `capture_security: definer` it cannot touch the outbox at all; with the
default `invoker` it may only add rows to it. In both it cannot reuse a capture function."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cdc_bridge.capture.function import capture_function_name
from cdc_bridge.config import BridgeConfig
from tests.helpers import example_config, fetch, install
from tests.pg import TestServer


@pytest.fixture
def app_role(pg_server: TestServer, db: str) -> Iterator[str]:
    """A LOGIN role owning nothing, allowed only to write the application's tables."""
    name = pg_server.new_name("app")
    with pg_server.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}"
            ).format(sql.Identifier(name))
        )
    yield name
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with pg_server.admin() as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def with_security(config: BridgeConfig, security: str) -> BridgeConfig:
    database = config.database.model_copy(update={"capture_security": security})
    return config.model_copy(update={"database": database})


def test_definer_capture_needs_no_bridge_grant(db: str, app_role: str) -> None:
    install(example_config(db))  # capture_security: definer is the default
    as_app = make_conninfo(db, user=app_role)
    with psycopg.connect(as_app, autocommit=True) as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', NULL, NULL)")
        conn.execute("UPDATE customers SET name = 'Ann B' WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO cdc_bridge.outbox (table_name, op, key, origin) "
                "VALUES ('public.customers', 'D', '{\"id\": 1}', 'erp')"
            )
    assert fetch(db, "SELECT op, key, origin FROM cdc_bridge.outbox ORDER BY id") == [
        ("I", {"id": 1}, "erp"),
        ("U", {"id": 1}, "erp"),
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM cdc_bridge.outbox",
        "UPDATE cdc_bridge.outbox SET origin = 'shop'",
        "DELETE FROM cdc_bridge.outbox",
        "SELECT * FROM cdc_bridge.delivered",
        "INSERT INTO cdc_bridge.handoffs (table_name, key) VALUES ('public.orders', '{}')",
    ],
)
def test_invoker_capture_lets_writers_add_outbox_rows_and_nothing_more(
    db: str, app_role: str, statement: str
) -> None:
    install(with_security(example_config(db), "invoker"))
    as_app = make_conninfo(db, user=app_role)
    with psycopg.connect(as_app, autocommit=True) as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', NULL, NULL)")
        conn.execute("UPDATE customers SET name = 'Ann B' WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    assert fetch(db, "SELECT op, key, origin FROM cdc_bridge.outbox ORDER BY id") == [
        ("I", {"id": 1}, "erp"),
        ("U", {"id": 1}, "erp"),
    ]


@pytest.mark.parametrize("security", ["invoker", "definer"])
def test_application_role_cannot_attach_the_capture_function(
    db: str, app_role: str, security: str
) -> None:
    config = with_security(example_config(db), security)
    customers = config.table("public.customers")
    install(config)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE public.scratch (id int) ; ALTER TABLE public.scratch OWNER TO {}"
            ).format(sql.Identifier(app_role))
        )
    with (
        psycopg.connect(make_conninfo(db, user=app_role), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER forge AFTER INSERT ON public.scratch FOR EACH ROW "
                "EXECUTE FUNCTION {}('')"
            ).format(sql.Identifier("cdc_bridge", capture_function_name(customers, "ins")))
        )
