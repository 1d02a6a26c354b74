"""Hostile table and column names install, capture and report status correctly."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from alembic import command
from psycopg import sql

from cdc_bridge.capture.check import check_database
from cdc_bridge.capture.render import render_install, render_uninstall
from cdc_bridge.capture.revision import generate_revision
from cdc_bridge.capture.status import State, trigger_status
from cdc_bridge.config import BridgeConfig, parse_config
from cdc_bridge.errors import ConfigError
from tests.helpers import SECRET
from tests.integration.test_migrations import REPO, alembic_config

SCHEMA = 'Sch"ema; x'
TABLE = "We\"ird'; DROP TABLE customers; --"
KEY = "Id :key"  # a `:word` that op.execute would take for a bind parameter
MIXED = "Mixed Case"
LONG = "é" * 31 + "x"  # exactly 63 bytes
SPACED = "a b;c"


def hostile_config(dsn: str, **overrides: Any) -> BridgeConfig:
    label = '"' + SCHEMA.replace('"', '""') + '"."' + TABLE.replace('"', '""') + '"'
    table = {"key": [KEY], "sor": {MIXED: "local", LONG: "both", SPACED: "peer"}}
    table.update(overrides)
    document = {
        "system": "erp",
        "database": {"url": dsn},
        "peer": {"name": "shop", "url": "http://127.0.0.1:8082", "secret": SECRET},
        "tables": {label: table},
    }
    return parse_config(yaml.safe_dump(document, allow_unicode=True), "hostile.yaml", {})


@pytest.fixture
def hostile_db(db: str) -> str:
    columns = [
        sql.SQL("{} bigint PRIMARY KEY").format(sql.Identifier(KEY)),
        sql.SQL("{} text").format(sql.Identifier(MIXED)),
        sql.SQL("{} text").format(sql.Identifier(LONG)),
        sql.SQL("{} text").format(sql.Identifier(SPACED)),
    ]
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        conn.execute(
            sql.SQL("CREATE TABLE {} ({})").format(
                sql.Identifier(SCHEMA, TABLE), sql.SQL(", ").join(columns)
            )
        )
    return db


def outbox(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    query = "SELECT op, key, fields, old, changed FROM cdc_bridge.outbox ORDER BY id"
    return conn.execute(query).fetchall()


def test_hostile_names_install_through_alembic_and_capture(hostile_db: str, tmp_path: Path) -> None:
    config = hostile_config(hostile_db)
    with psycopg.connect(hostile_db) as conn:
        assert check_database(config, conn) == []
    generate_revision(config, "hostile", REPO / "migrations", tmp_path)
    command.upgrade(alembic_config(hostile_db, tmp_path), "head")

    table = sql.Identifier(SCHEMA, TABLE)
    with psycopg.connect(hostile_db, autocommit=True) as conn:
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'm', 'l', 's')").format(table))
        conn.execute(sql.SQL("UPDATE {} SET {} = 'l2'").format(table, sql.Identifier(LONG)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="owned by shop"):
            conn.execute(sql.SQL("UPDATE {} SET {} = 'x'").format(table, sql.Identifier(SPACED)))
        conn.execute(sql.SQL("DELETE FROM {}").format(table))
        rows = outbox(conn)
        statuses = trigger_status(config, conn)

    assert rows == [
        ("I", {KEY: 1}, {KEY: 1, MIXED: "m", LONG: "l"}, None, None),
        ("U", {KEY: 1}, {KEY: 1, MIXED: "m", LONG: "l2"}, {LONG: "l"}, [LONG]),
        ("D", {KEY: 1}, None, None, None),
    ]
    assert [s.state for s in statuses] == [State.INSTALLED]


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"key": ["id\x00x"]}, "key"),
        ({"key": ["k" * 64]}, "key"),
        ({"sor": {"é" * 32: "local"}}, "sor"),
        ({"sor": {"a\x00": "local"}}, "sor"),
    ],
    ids=["nul-key", "long-key", "long-field", "nul-field"],
)
def test_nul_and_overlong_names_are_refused_naming_the_key(
    overrides: dict[str, Any], names: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        hostile_config("postgresql://u@127.0.0.1:1/x", **overrides)
    [problem] = refused.value.problems
    assert f".{names}:" in problem and "fix:" in problem
    assert ("NUL" in problem) or ("63" in problem)


def test_overlong_table_name_is_refused() -> None:
    document = {
        "system": "erp",
        "database": {"url": "postgresql://u@127.0.0.1:1/x"},
        "peer": {"name": "shop", "url": "http://127.0.0.1:8082", "secret": SECRET},
        "tables": {"public." + "t" * 64: {"key": ["id"], "sor": "local"}},
    }
    with pytest.raises(ConfigError) as refused:
        parse_config(yaml.safe_dump(document), "long.yaml", {})
    [problem] = refused.value.problems
    assert problem.startswith("tables:") and "64 bytes" in problem


def test_names_holding_a_dollar_quote_tag_install_capture_and_uninstall(db: str) -> None:
    # Each name holds a tag the install puts around a function or DO body (the table and
    # its columns also the first tag tried instead), so the tags must move out of the way.
    schema, role = "br$guard_v1$x$revoke$", f"re$create_role$lay_{uuid.uuid4().hex[:8]}"
    table, key, column = "t$capture$x", "id$capture_1$", "n$capture$"
    document = {
        "system": "erp",
        "database": {"url": db, "schema": schema, "relay_role": role},
        "peer": {"name": "shop", "url": "http://127.0.0.1:8082", "secret": SECRET},
        "tables": {f"public.{table}": {"key": [key], "sor": {column: "local"}}},
    }
    config = parse_config(yaml.safe_dump(document), "dollars.yaml", {})
    relation = sql.Identifier("public", table)
    query = sql.SQL("SELECT op, key, fields, old, changed FROM {} ORDER BY id").format(
        sql.Identifier(schema, "outbox")
    )
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} ({} int PRIMARY KEY, {} text)").format(
                relation, sql.Identifier(key), sql.Identifier(column)
            )
        )
        try:
            conn.execute(render_install(config))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'a')").format(relation))
            conn.execute(
                sql.SQL("UPDATE {} SET {} = 'b'").format(relation, sql.Identifier(column))
            )
            conn.execute(sql.SQL("DELETE FROM {}").format(relation))
            assert conn.execute(query).fetchall() == [
                ("I", {key: 1}, {key: 1, column: "a"}, None, None),
                ("U", {key: 1}, {key: 1, column: "b"}, None, [column]),
                ("D", {key: 1}, None, None, None),
            ]
            assert [s.state for s in trigger_status(config, conn)] == [State.INSTALLED]
            conn.execute(render_uninstall(config))
            gone = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,))
            assert gone.fetchone() == (0,)
        finally:
            # Roles belong to the cluster: the uninstall keeps it, the test removes it.
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
