"""Least privilege: an application role with no grant on the bridge schema writes to synced
tables and is captured, but can neither forge outbox rows nor reuse the capture functions."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

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


def test_application_role_is_captured_without_any_bridge_grant(db: str, app_role: str) -> None:
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
    assert fetch(db, "SELECT op, key FROM cdc_bridge.outbox ORDER BY id") == [
        ("I", {"id": 1}),
        ("U", {"id": 1}),
    ]


def test_application_role_cannot_attach_the_capture_function(db: str, app_role: str) -> None:
    install(example_config(db))
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
            "CREATE TRIGGER forge AFTER INSERT ON public.scratch FOR EACH ROW "
            "EXECUTE FUNCTION cdc_bridge.capture_v1('public.customers', 'erp', '{id}', '*', "
            "'{}', '')"
        )
