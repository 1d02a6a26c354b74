"""Small helpers shared by the test tiers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

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
