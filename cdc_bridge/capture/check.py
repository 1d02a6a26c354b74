"""`cdc-bridge check`: the config against the live database.

Every problem is collected (the user fixes them in one go); the caller decides the exit
code. Catalog queries live in sql/capture_check.sql.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from cdc_bridge import sql as queries
from cdc_bridge.capture.filters import parse_where, referenced_columns
from cdc_bridge.config import BridgeConfig, TableSpec
from cdc_bridge.errors import FilterError, IdentifierError
from cdc_bridge.identifiers import QualifiedName


@dataclass(frozen=True)
class TableFacts:
    """What the catalog says about one table (None columns: the table does not exist)."""

    columns: tuple[str, ...] | None
    unique_keys: tuple[frozenset[str], ...]


def quoted_relation(name: QualifiedName) -> str:
    """`"schema"."table"`: a text that to_regclass resolves exactly, whatever the name holds."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (name.schema_name, name.table))


def read_table_facts(conn: psycopg.Connection[Any], name: QualifiedName) -> TableFacts:
    params = {"relation": quoted_relation(name)}
    if conn.execute(queries.query("check_relation"), params).fetchone() in (None, (None,)):
        return TableFacts(columns=None, unique_keys=())
    columns = tuple(r[0] for r in conn.execute(queries.query("check_columns"), params))
    unique = tuple(
        frozenset(r[0]) for r in conn.execute(queries.query("check_unique_indexes"), params)
    )
    return TableFacts(columns=columns, unique_keys=unique)


def table_problems(spec: TableSpec, facts: TableFacts) -> list[str]:
    """Every way the table differs from what the config needs (pure: no database)."""
    if facts.columns is None:
        return [
            f"{spec.label}: table {spec.name.dotted} does not exist; "
            "fix: create it, or remove it from `tables`"
        ]
    problems: list[str] = []
    existing = set(facts.columns)
    problems += _missing(spec, "key column", spec.key, existing)
    problems += _missing(spec, "field", [f for f in spec.owners if f not in spec.key], existing)
    problems += _where_problems(spec, existing)
    # A missing key column is already reported; uniqueness is only asked of real columns.
    if not _missing_any(spec.key, existing) and not _key_is_unique(spec, facts):
        keys = ", ".join(spec.key)
        problems.append(
            f"{spec.label}: key ({keys}) is not unique: no primary key or unique index covers "
            f"exactly these columns; fix: {_unique_index_hint(spec)}, "
            "or name the primary key columns in `key`"
        )
    return problems


def _unique_index_hint(spec: TableSpec) -> str:
    """The statement that would fix it, quoted so that it can be pasted as it is."""
    statement = sql.SQL("CREATE UNIQUE INDEX ON {} ({})").format(
        spec.name.identifier, sql.SQL(", ").join(map(sql.Identifier, spec.key))
    )
    return statement.as_string(None)


def _missing_any(columns: Iterable[str], existing: set[str]) -> bool:
    return any(c not in existing for c in columns)


def _missing(spec: TableSpec, what: str, columns: Iterable[str], existing: set[str]) -> list[str]:
    return [
        f"{spec.label}: {what} {column!r} does not exist in {spec.name.dotted}; "
        "fix: correct its spelling (names are case-sensitive) or add the column"
        for column in columns
        if column not in existing
    ]


def _where_problems(spec: TableSpec, existing: set[str]) -> list[str]:
    if spec.where is None:
        return []
    try:
        columns = referenced_columns(parse_where(spec.where))
    except (FilterError, IdentifierError) as exc:
        return [f"{spec.label}.where: {exc}"]
    return [
        f"{spec.label}.where: column {column!r} does not exist in {spec.name.dotted}; "
        "fix: correct the filter"
        for column in columns
        if column not in existing
    ]


def _key_is_unique(spec: TableSpec, facts: TableFacts) -> bool:
    return frozenset(spec.key) in facts.unique_keys


def check_database(config: BridgeConfig, conn: psycopg.Connection[Any]) -> list[str]:
    """Every problem between the config and the database behind `conn`."""
    problems: list[str] = []
    for spec in config.table_specs:
        problems += table_problems(spec, read_table_facts(conn, spec.name))
    return problems


def login_warnings(config: BridgeConfig, conn: psycopg.Connection[Any]) -> list[str]:
    """What is wrong with the role the bridge logs in as (docs/security.md): a superuser or
    a synced table's owner can bypass the guard and the capture, and a role outside the
    relay role has `serve`'s own applies refused by the guard."""
    role = config.database.relay_role
    row = conn.execute(queries.query("check_login_role"), {"relay_role": role}).fetchone()
    assert row is not None  # session_user always has a pg_roles row
    login, superuser, relay_member = row
    if superuser:
        return [
            f"the bridge logs in as {login}, a superuser: a leaked bridge password would "
            f"give away the whole cluster; fix: log in as a role that is only a member of "
            f"{role} (CREATE ROLE bridge LOGIN IN ROLE {role})"
        ]
    warnings = []
    labels = {quoted_relation(spec.name): spec.label for spec in config.table_specs}
    owned = conn.execute(queries.query("check_owned_tables"), {"relations": list(labels)})
    for (relation,) in owned:
        warnings.append(
            f"the bridge logs in as {login}, which owns {labels[relation]} (or may SET ROLE to its "
            f"owner): it could disable the table's triggers; fix: log in as a role that "
            f"owns nothing and is a member of {role}"
        )
    if relay_member is False:
        warnings.append(
            f"the bridge logs in as {login}, which is not a member of the relay role "
            f"{role}: the guard would refuse serve's writes of the peer's changes; "
            f"fix: GRANT {role} TO {login}"
        )
    return warnings
