"""Trust boundaries on a running pair (docs/security.md): the shared secret rotates with
nothing refused, and both bridges run as a role that owns nothing and cannot create."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.acceptance.bridges import Bridge, bridge_pair, wait_until
from tests.helpers import SECRET
from tests.pg import TestServer

NEW_SECRET = "rotated-secret-not-for-production"


def write_and_wait(erp: Bridge, shop: Bridge, n: int) -> None:
    """A change each way (an ERP customer, a shop invoice), then wait for both to arrive."""
    erp.sql(
        "INSERT INTO customers VALUES (%s, %s, %s, 'gold')", n, f"Customer {n}", f"c{n}@example.com"
    )
    shop.sql("INSERT INTO invoices VALUES (%s, %s, %s)", n, 1000 + n, f"{n}123456789.25")
    wait_until(
        f"step {n} in both databases",
        lambda: (
            shop.value("SELECT count(*) FROM customers WHERE id = %s", n) == 1
            and erp.value("SELECT count(*) FROM invoices WHERE id = %s", n) == 1
        ),
        [erp, shop],
    )


def refusals(bridge: Bridge) -> list[tuple[object, ...]]:
    """Every attempt the peer answered with a refusal, and every failed change."""
    return bridge.sql(
        "SELECT 'attempt', http_status, error FROM cdc_bridge.attempts WHERE http_status >= 400 "
        "UNION ALL SELECT 'failed', http_status, reason FROM cdc_bridge.failed"
    )


def same_rows(erp: Bridge, shop: Bridge, table: str) -> None:
    query = sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(sql.Identifier(table))
    assert erp.sql(query.as_string(None)) == shop.sql(query.as_string(None))


def test_the_shared_secret_rotates_on_a_live_pair_with_nothing_refused(
    pg_server: TestServer, template_db: str, tmp_path: Path
) -> None:
    with bridge_pair(pg_server, template_db, tmp_path) as (erp, shop):
        both = [erp, shop]
        write_and_wait(erp, shop, 1)
        # 1. Every receiver accepts the new secret too; every sender still signs with the old.
        for bridge in both:
            bridge.set_secrets(SECRET, NEW_SECRET)
            bridge.restart("serve")
            write_and_wait(erp, shop, 2 + both.index(bridge))
        # 2. Senders sign with the new one, one side after the other.
        for bridge in both:
            bridge.set_secrets(NEW_SECRET, SECRET)
            bridge.restart("run")
            write_and_wait(erp, shop, 4 + both.index(bridge))
        # 3. The old secret goes.
        for bridge in both:
            bridge.set_secrets(NEW_SECRET)
            bridge.restart("serve")
            bridge.restart("run")
            write_and_wait(erp, shop, 6 + both.index(bridge))
        assert refusals(erp) == [] and refusals(shop) == []
        same_rows(erp, shop, "customers")
        same_rows(erp, shop, "invoices")
        # The old secret is refused now: a sender left on it would not get through.
        erp.set_secrets(SECRET)
        erp.restart("run")
        erp.sql("INSERT INTO customers VALUES (99, 'Late', NULL, NULL)")
        wait_until("the stale sender refused", lambda: bool(refusals(erp)), both)
        assert refusals(erp)[0][1] == 401


@pytest.fixture
def bridge_login(pg_server: TestServer) -> Iterator[str]:
    """The role both bridges log in as: a member of the relay role, and nothing else."""
    name = pg_server.new_name("bridge")
    with pg_server.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        admin.execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdc_bridge_relay') "
            "THEN CREATE ROLE cdc_bridge_relay NOLOGIN; END IF; END $$"
        )
        admin.execute(sql.SQL("GRANT cdc_bridge_relay TO {}").format(sql.Identifier(name)))
    yield name
    with pg_server.admin() as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def lock_down(dsn: str) -> None:
    """Nobody but the DBA may create anything in this database, not even temp tables."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        revoke = sql.SQL("REVOKE CREATE, TEMPORARY ON DATABASE {} FROM PUBLIC")
        conn.execute(revoke.format(sql.Identifier(conn.info.dbname)))
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


def owned(bridge: Bridge, role: str) -> list[tuple[object, ...]]:
    return bridge.sql(OWNS, *[role] * 4)


CAN_CREATE = """
SELECT 'database ' || current_database()
WHERE has_database_privilege(%s, current_database(), 'CREATE')
   OR has_database_privilege(%s, current_database(), 'TEMPORARY')
UNION ALL
SELECT 'schema ' || nspname FROM pg_namespace WHERE has_schema_privilege(%s, oid, 'CREATE')
"""
OWNS = """
SELECT 'relation ' || relname FROM pg_class WHERE relowner = %s::regrole
UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE proowner = %s::regrole
UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspowner = %s::regrole
UNION ALL SELECT 'type ' || typname FROM pg_type WHERE typowner = %s::regrole
"""


def test_both_bridges_run_as_a_role_that_owns_nothing_and_cannot_create(
    pg_server: TestServer, template_db: str, tmp_path: Path, bridge_login: str
) -> None:
    with bridge_pair(
        pg_server, template_db, tmp_path, login=bridge_login, prepare=lock_down
    ) as (erp, shop):
        for bridge in (erp, shop):
            assert bridge.sql(CAN_CREATE, *[bridge_login] * 3) == []
            assert owned(bridge, bridge_login) == []
        write_and_wait(erp, shop, 1)
        # The per-field path and the handoff path, both applied by the locked-down role.
        erp.sql("INSERT INTO products VALUES ('SKU-1', 'Chair', 49.90, NULL, 3)")
        wait_until("product", lambda: shop.value("SELECT count(*) FROM products") == 1, [erp])
        shop.sql("UPDATE products SET description = 'oak' WHERE sku = 'SKU-1'")
        shop.sql("INSERT INTO orders VALUES (5, 1, 9876543210.99, 'new')")
        wait_until(
            "description and order in the ERP",
            lambda: (
                erp.value("SELECT description FROM products") == "oak"
                and erp.value("SELECT count(*) FROM orders") == 1
            ),
            [erp, shop],
        )
        assert refusals(erp) == [] and refusals(shop) == []
        for bridge in (erp, shop):
            assert owned(bridge, bridge_login) == []
