"""Only the bridge's own role can mark a write as the peer's (docs/security.md).

A plain application role that sets `cdc_bridge.origin` to the peer's name, in any of the
three ways PostgreSQL offers, is refused by the guard like any other local write, and its
writes to data this side owns still ship with this side's origin. A login role that is a
member of the relay role, which is what `serve` connects as, is let through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cdc_bridge.config import BridgeConfig
from tests.helpers import drop_role, example_config, fetch, install, login_role
from tests.pg import TestServer

Forge = Callable[[psycopg.Connection[Any]], None]


def _set(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET cdc_bridge.origin = 'shop'")


def _set_local(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET LOCAL cdc_bridge.origin = 'shop'")


def _set_config(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT set_config('cdc_bridge.origin', 'shop', false)")


FORGES = pytest.mark.parametrize(
    "forge", [_set, _set_local, _set_config], ids=["SET", "SET LOCAL", "set_config"]
)


@pytest.fixture
def config(pg_server: TestServer, db: str) -> Iterator[BridgeConfig]:
    """The ERP's config with a relay role of this test's own, installed."""
    role = pg_server.new_name("relay")
    base = example_config(db)
    database = base.database.model_copy(update={"relay_role": role})
    config = base.model_copy(update={"database": database})
    install(config)
    with psycopg.connect(db, autocommit=True) as conn:
        # Peer-owned rows as the bridge would have applied them (a superuser session is
        # a member of every role, so its origin setting counts).
        conn.execute("SET cdc_bridge.origin = 'shop'")
        conn.execute("INSERT INTO invoices VALUES (7, 70, 1234567890.12)")
        conn.execute("INSERT INTO products VALUES ('SKU-1', 'Chair', 49.90, 'oak', 3)")
        conn.execute("DELETE FROM cdc_bridge.outbox")
    yield config
    drop_role(pg_server, db, role)


@pytest.fixture
def app_role(pg_server: TestServer, db: str, config: BridgeConfig) -> Iterator[str]:
    """A LOGIN role owning nothing, allowed only to write the application's tables."""
    with login_role(pg_server, db, "app") as name:
        yield name


@pytest.fixture
def bridge_role(pg_server: TestServer, db: str, config: BridgeConfig) -> Iterator[str]:
    """The login role `serve` would use: a member of the relay role, owning nothing."""
    with login_role(pg_server, db, "bridge", member_of=config.database.relay_role) as name:
        yield name


PEER_WRITES = [
    "UPDATE invoices SET amount = 1 WHERE id = 7",
    "INSERT INTO invoices VALUES (8, 80, 99999999.99)",
    "DELETE FROM invoices WHERE id = 7",
    "UPDATE products SET description = 'forged' WHERE sku = 'SKU-1'",
]


@FORGES
@pytest.mark.parametrize("write", PEER_WRITES)
def test_plain_role_setting_the_origin_is_refused_by_the_guard(
    db: str, app_role: str, forge: Forge, write: str
) -> None:
    with psycopg.connect(make_conninfo(db, user=app_role)) as conn:
        forge(conn)
        assert conn.execute("SHOW cdc_bridge.origin").fetchone() == ("shop",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="owned by shop"):
            conn.execute(write)
    assert fetch(db, "SELECT amount FROM invoices ORDER BY id") == [(Decimal("1234567890.12"),)]
    assert fetch(db, "SELECT description FROM products") == [("oak",)]


@FORGES
def test_plain_role_setting_the_origin_still_ships_its_own_writes(
    db: str, app_role: str, forge: Forge
) -> None:
    with psycopg.connect(make_conninfo(db, user=app_role)) as conn:
        forge(conn)
        conn.execute("INSERT INTO customers VALUES (1, 'Ann', 'ann@example.com', 'gold')")
        conn.execute("UPDATE customers SET tier = 'silver' WHERE id = 1")
        conn.execute("UPDATE products SET price = 59.90 WHERE sku = 'SKU-1'")
        conn.execute("DELETE FROM customers WHERE id = 1")
    rows = fetch(db, "SELECT table_name, op, origin FROM cdc_bridge.outbox ORDER BY id")
    assert rows == [
        ("public.customers", "I", "erp"),
        ("public.customers", "U", "erp"),
        ("public.products", "U", "erp"),
        ("public.customers", "D", "erp"),
    ]


def test_a_definer_function_does_not_lend_its_owner_to_the_guard(
    db: str, app_role: str
) -> None:
    """The test is on the session's login role, so calling a SECURITY DEFINER function
    owned by a superuser (a member of every role) does not make the write the peer's."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION public.fix_invoice() RETURNS void LANGUAGE sql "
                "SECURITY DEFINER SET search_path = public "
                "AS $$ UPDATE invoices SET amount = 1 WHERE id = 7 $$; "
                "GRANT EXECUTE ON FUNCTION public.fix_invoice() TO {}"
            ).format(sql.Identifier(app_role))
        )
    with psycopg.connect(make_conninfo(db, user=app_role), autocommit=True) as conn:
        _set(conn)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="owned by shop"):
            conn.execute("SELECT public.fix_invoice()")


def test_the_bridge_role_applies_for_the_peer_without_being_sent_back(
    db: str, bridge_role: str
) -> None:
    with psycopg.connect(make_conninfo(db, user=bridge_role)) as conn:
        _set_local(conn)
        conn.execute("UPDATE invoices SET amount = 2.50 WHERE id = 7")
        conn.execute("INSERT INTO customers VALUES (2, 'Bo', NULL, NULL)")
    # Without the setting, the bridge's role writes as this side, like anyone.
    with (
        psycopg.connect(make_conninfo(db, user=bridge_role)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="owned by shop"),
    ):
        conn.execute("UPDATE invoices SET amount = 3 WHERE id = 7")
    assert fetch(db, "SELECT amount FROM invoices") == [(Decimal("2.50"),)]
    # Received tables capture nothing; on a captured one the origin marks an echo.
    assert fetch(db, "SELECT table_name, op, origin FROM cdc_bridge.outbox ORDER BY id") == [
        ("public.customers", "I", "shop"),
    ]
