"""Small helpers shared by the test tiers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from cdc_bridge import sql as queries
from cdc_bridge.capture.function import listening_key
from cdc_bridge.capture.render import render_install
from cdc_bridge.config import BridgeConfig, parse_config
from tests.pg import TestServer

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "test-secret-not-for-production"


def example_config(dsn: str, name: str = "erp.yaml", **env: str) -> BridgeConfig:
    """The fixture config `name`, its ${VARS} filled with this database and a test secret."""
    text = (FIXTURES / name).read_text()
    environ = {"ERP_DATABASE_URL": dsn, "SHOP_DATABASE_URL": dsn, "BRIDGE_SECRET": SECRET, **env}
    return parse_config(text, name, environ)


def install(config: BridgeConfig) -> None:
    with psycopg.connect(config.database.url.get_secret_value()) as conn:
        conn.execute(render_install(config))


def fetch(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params or None).fetchall()


@contextlib.contextmanager
def login_role(
    server: TestServer, dsn: str, label: str, member_of: str | None = None
) -> Iterator[str]:
    """A LOGIN role owning nothing, allowed to write the application's tables (schema
    public) and, with `member_of`, a member of that role; dropped afterwards."""
    name = server.new_name(label)
    role = sql.Identifier(name)
    with server.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
        if member_of is not None:
            admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member_of), role))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}"
            ).format(role)
        )
    try:
        yield name
    finally:
        drop_role(server, dsn, name)


def drop_role(server: TestServer, dsn: str, name: str) -> None:
    """Drop a role this test created, after what it owns or was granted in `dsn`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with server.admin() as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


# ------------------------------------------------------------------ NOTIFY, as the relay sees it

CHANNEL = "cdc_bridge"  # the example configs' bridge schema, which names the channel
SENTINEL = "end of the changes under test"


def listening_pid(dsn: str, schema: str = CHANNEL) -> int | None:
    """The session holding the listening key, as a relay does while idle (None: nobody)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = queries.query("relay_listening_holder")
        row = conn.execute(query, {"key": listening_key(schema)}).fetchone()
    return None if row is None else int(row[0])


def listen_as_relay(conn: psycopg.Connection[Any], schema: str = CHANNEL) -> None:
    """LISTEN and hold the listening key on `conn` (autocommit), as an idle relay does."""
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(schema)))
    conn.execute(queries.query("relay_listen"), {"key": listening_key(schema), "timeout": "5s"})


def notifications_sent(listener: psycopg.Connection[Any], dsn: str) -> list[str]:
    """Payloads `listener` received on the channel, up to a sentinel sent now.

    Notifications arrive in commit order, so any NOTIFY of a transaction that committed
    before this call arrives before the sentinel: no waiting for an absence.
    """
    with psycopg.connect(dsn, autocommit=True) as sender:
        sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, SENTINEL))
    payloads = []
    for notification in listener.notifies(timeout=30):
        if notification.payload == SENTINEL:
            return payloads
        payloads.append(notification.payload)
    raise AssertionError("the sentinel NOTIFY never arrived")
