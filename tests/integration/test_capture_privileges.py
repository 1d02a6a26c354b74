"""Least privilege: an application role with no grant of its own writes to synced tables and
is captured. It cannot touch the outbox or any other bridge table, cannot reuse a capture
function, and so cannot get a change shipped that it did not make (docs/security.md)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cdc_bridge.capture.function import CaptureKind, capture_function_name
from tests.helpers import example_config, fetch, install, login_role
from tests.pg import TestServer


@pytest.fixture
def app_role(pg_server: TestServer, db: str) -> Iterator[str]:
    """A LOGIN role owning nothing, allowed only to write the application's tables."""
    with login_role(pg_server, db, "app") as name:
        yield name


def test_capture_needs_no_bridge_grant(db: str, app_role: str) -> None:
    install(example_config(db))
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
        "INSERT INTO cdc_bridge.outbox (table_name, op, key, fields, origin) "
        "VALUES ('public.invoices', 'U', '{\"id\": 7}', '{\"id\": 7, \"amount\": 0}', 'erp')",
        "SELECT * FROM cdc_bridge.outbox",
        "UPDATE cdc_bridge.outbox SET origin = 'shop'",
        "DELETE FROM cdc_bridge.outbox",
        "SELECT * FROM cdc_bridge.delivered",
        "INSERT INTO cdc_bridge.handoffs (table_name, key) VALUES ('public.orders', '{}')",
        "SELECT setval('cdc_bridge.relay_listening', 0)",
    ],
)
def test_writers_touch_no_bridge_object_by_hand(db: str, app_role: str, statement: str) -> None:
    install(example_config(db))
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


def test_a_trigger_of_the_writers_own_cannot_forge_a_change(db: str, app_role: str) -> None:
    """Any role may create a temporary table; a trigger on it is not a way into the outbox."""
    install(example_config(db))
    with psycopg.connect(make_conninfo(db, user=app_role), autocommit=True) as conn:
        conn.execute(
            "CREATE TEMP TABLE scratch (id int); "
            "CREATE FUNCTION pg_temp.forge() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO cdc_bridge.outbox (table_name, op, key, origin) "
            "VALUES ('public.invoices', 'D', '{\"id\": 7}', 'erp'); RETURN NULL; END $$; "
            "CREATE TRIGGER forge AFTER INSERT ON scratch FOR EACH ROW "
            "EXECUTE FUNCTION pg_temp.forge()"
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO scratch VALUES (1)")
    assert fetch(db, "SELECT count(*) FROM cdc_bridge.outbox") == [(0,)]


@pytest.mark.parametrize("kind", ["ins", "upd", "del"])
def test_application_role_cannot_attach_the_capture_function(
    db: str, app_role: str, kind: CaptureKind
) -> None:
    config = example_config(db)
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
            ).format(sql.Identifier("cdc_bridge", capture_function_name(customers, kind)))
        )
