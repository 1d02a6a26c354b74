"""Least privilege, checked: every privilege the install grants is in docs/security.md's
list, and everything listed is granted. The grants are read from the catalog (every ACL of
every object in the database, before and after the install), never from the install SQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc_bridge.capture.function import wire_function_name
from cdc_bridge.config import BridgeConfig, TableSpec
from tests.helpers import example_config, install

SECURITY_DOC = Path(__file__).parents[2] / "docs" / "security.md"
HEADING = "## Privileges the install grants"
_ROW = re.compile(r"^\| ([^|]+?) \| ([^|]+?) \| ([^|]+?) \|$")

Grant = tuple[str, str, str]  # (object, grantee, privilege)

# Every ACL in the database: relations, columns, schemas, functions, types, the database
# itself. A NULL ACL means the built-in default, which acldefault() spells out (a new
# function is executable by PUBLIC unless revoked).
ALL_GRANTS = """
SELECT kind || ' ' || object,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type
FROM (
    SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END AS kind,
           format('%I.%I', n.nspname, c.relname) AS object, c.relowner AS owner,
           coalesce(c.relacl, acldefault(
               (CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner)) AS acl
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    UNION ALL
    SELECT 'column', format('%s.%I', at.attrelid::regclass, at.attname), c.relowner, at.attacl
    FROM pg_attribute at JOIN pg_class c ON c.oid = at.attrelid
    WHERE at.attacl IS NOT NULL
    UNION ALL
    SELECT 'schema', format('%I', nspname), nspowner, coalesce(nspacl, acldefault('n', nspowner))
    FROM pg_namespace
    UNION ALL
    SELECT 'function', p.oid::regprocedure::text, p.proowner,
           coalesce(p.proacl, acldefault('f', p.proowner))
    FROM pg_proc p
    UNION ALL
    -- Every type is usable by PUBLIC by default (row types of the bridge's tables too): only
    -- a grant written down counts here.
    SELECT 'type', t.oid::regtype::text, t.typowner, t.typacl
    FROM pg_type t WHERE t.typacl IS NOT NULL
    UNION ALL
    SELECT 'database', format('%I', datname), datdba, coalesce(datacl, acldefault('d', datdba))
    FROM pg_database WHERE datname = current_database()
) AS o, aclexplode(o.acl) AS a
WHERE a.grantee <> o.owner
"""

BRIDGE_RELATIONS = """
SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END,
       format('%%I.%%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'S')
"""


def documented() -> list[tuple[str, list[str], str]]:
    """(grantee, privileges, on) of each row of the table under HEADING."""
    text = SECURITY_DOC.read_text(encoding="utf-8")
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [m.groups() for line in section.splitlines() if (m := _ROW.match(line))]
    assert rows[0] == ("Grantee", "Privileges", "On"), rows[0]
    return [(g, [p.strip() for p in privileges.split(",")], on) for g, privileges, on in rows[1:]]


def granted(conn: psycopg.Connection[Any]) -> set[Grant]:
    return {(o, g, p) for o, g, p in conn.execute(ALL_GRANTS)}


def expected(conn: psycopg.Connection[Any], config: BridgeConfig) -> set[Grant]:
    """The documented list, spelled out for this config and database."""
    schema = config.bridge_schema
    relations = conn.execute(BRIDGE_RELATIONS, [schema]).fetchall()
    receives = [s for s in config.table_specs if s.receives_whole_rows or s.received_fields]
    ships_only = [s for s in config.table_specs if s not in receives]
    quoted = conn.execute("SELECT format('%%I', %s::text)", [schema]).fetchone()
    assert quoted is not None
    objects: dict[str, list[str]] = {
        "the bridge schema": [f"schema {quoted[0]}"],
        "every table in the bridge schema": [f"{k} {o}" for k, o in relations if k == "table"],
        "every table in the bridge schema, from PostgreSQL 17": [
            f"{k} {o}" for k, o in relations if k == "table" and conn.info.server_version >= 170000
        ],
        "every sequence in the bridge schema": [
            f"{k} {o}" for k, o in relations if k == "sequence"
        ],
        "each table this side ships and does not receive": [
            f"table {s.name.dotted}" for s in ships_only
        ],
        "each table this side receives": [f"table {s.name.dotted}" for s in receives],
        "the outbox and its two tables": [
            f"table {quoted[0]}.{name}" for name in ("outbox", "outbox_0", "outbox_1")
        ],
        "the outbox's slot sequence": [f"sequence {quoted[0]}.outbox_slot"],
        "each synced table's wire function": [
            f"function {wire_function(conn, schema, s)}" for s in config.table_specs
        ],
    }
    grantees = {"relay role": config.database.relay_role, "PUBLIC": "PUBLIC"}
    return {
        (obj, grantees[grantee], privilege)
        for grantee, privileges, on in documented()
        for obj in objects[on]
        for privilege in privileges
    }


def wire_function(conn: psycopg.Connection[Any], schema: str, spec: TableSpec) -> str:
    """The table's wire function as the catalog names it (its argument types included)."""
    row = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n"
        " ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = %s",
        [schema, wire_function_name(spec)],
    ).fetchone()
    assert row is not None, f"no wire function for {spec.label}"
    return str(row[0])


@pytest.mark.parametrize("fixture", ["erp.yaml", "erp_pair.yaml", "shop.yaml"])
def test_the_install_grants_exactly_the_documented_privileges(db: str, fixture: str) -> None:
    config = example_config(db, name=fixture)
    with psycopg.connect(db, autocommit=True) as conn:
        before = granted(conn)
        install(config)
        added = granted(conn) - before
        assert added == expected(conn, config)


def test_the_documented_list_is_read() -> None:
    """The parser sees the table (a renamed heading would otherwise compare nothing)."""
    rows = documented()
    assert ("relay role", ["USAGE"], "the bridge schema") in rows
    assert len(rows) == 9
