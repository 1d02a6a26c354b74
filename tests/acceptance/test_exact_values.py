"""Every built-in type arrives exactly: rows that Hypothesis writes at the ERP are read back
at the shop with the same `row::text`, through the real capture triggers, the real relay
and the shop's real `serve` on 127.0.0.1.

Two tables hold the same columns: one ships whole rows (PostgreSQL encodes each change in
the relay's query), one names its fields in a field map (the relay's SOR filter handles
each change in Python). Both paths must keep every value.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings

from cdc_bridge.config import BridgeConfig, parse_config
from tests import pg
from tests.helpers import FIXTURES, SECRET, install
from tests.integration.inbound_support import running
from tests.relay_support import config_text, running_relay, wait_drained
from tests.values import (
    EDGES,
    EDGES_NEGATED,
    NAMES,
    TYPES_DDL,
    insert_sql,
    params,
    rows,
    table_ddl,
    update_sql,
)

WHOLE, FIELDS = "zoo", "zoo_fields"
TABLES = (WHOLE, FIELDS)


def _with_tables(text: str, whole: str, owner: str) -> str:
    data = yaml.safe_load(text)
    data["tables"][f"public.{WHOLE}"] = {"key": ["id"], "sor": whole}
    data["tables"][f"public.{FIELDS}"] = {
        "key": ["id"],
        "sor": dict.fromkeys(("id", *NAMES), owner),
    }
    return yaml.safe_dump(data)


def erp_config(dsn: str, peer_url: str) -> BridgeConfig:
    return parse_config(_with_tables(config_text(dsn, peer_url), "local", "local"), "erp.yaml", {})


def shop_config(dsn: str) -> BridgeConfig:
    env = {"SHOP_DATABASE_URL": dsn, "BRIDGE_SECRET": SECRET}
    text = _with_tables((FIXTURES / "shop.yaml").read_text(), "peer", "peer")
    return parse_config(text, "shop.yaml", env)


def create_tables(*dsns: str) -> None:
    for dsn in dsns:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TYPES_DDL.encode())
            for table in TABLES:
                conn.execute(table_ddl(table).encode())


def row_text(dsn: str, table: str, key: int) -> str | None:
    with psycopg.connect(dsn) as conn:
        # The alias is no column's name: a column would shadow it.
        query = f"SELECT whole_row::text FROM public.{table} AS whole_row WHERE id = %s"  # noqa: S608
        row = conn.execute(query.encode(), [key]).fetchone()
    return None if row is None else str(row[0])


def failures(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT table_name, key, reason FROM cdc_bridge.failed").fetchall()


@pytest.fixture
def shop_db(pg_server: pg.TestServer, template_db: str) -> Iterator[str]:
    name = pg_server.new_name("shop")
    yield pg_server.create_database(name, template=template_db)
    pg_server.drop_database(name)


def test_rows_of_every_type_arrive_with_the_same_row_text(db: str, shop_db: str) -> None:
    create_tables(db, shop_db)
    with running(shop_config(shop_db)) as shop:
        erp = erp_config(db, shop.url)
        install(erp)
        with running_relay(erp):
            keys = itertools.count(1)

            @settings(
                max_examples=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(first=rows(), second=rows())
            @example(first=EDGES, second=EDGES_NEGATED)
            @example(first=EDGES_NEGATED, second=EDGES)
            def round_trip(first: dict[str, str | None], second: dict[str, str | None]) -> None:
                key = next(keys)
                for statement, values in (
                    (insert_sql, [key, *params(first)]),
                    (update_sql, [*params(second), key]),
                ):
                    with psycopg.connect(db, autocommit=True) as conn:
                        for table in TABLES:
                            conn.execute(statement(table).encode(), values)
                    wait_drained(db)
                    assert failures(db) == []
                    for table in TABLES:
                        sent = row_text(db, table, key)
                        assert sent is not None
                        assert row_text(shop_db, table, key) == sent

            round_trip()
