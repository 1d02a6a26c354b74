"""Small helpers shared by the test tiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from cdc_bridge.capture.render import render_install
from cdc_bridge.config import BridgeConfig, parse_config

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
