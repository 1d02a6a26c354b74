"""`cdc-bridge check`: the config against the live database.

Every problem is collected (the user fixes them in one go); the caller decides the exit
code. Catalog queries live in sql/capture_check.sql.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from cdc_bridge import sql as queries
from cdc_bridge.capture.filters import parse_expression, parse_where, referenced_columns
from cdc_bridge.config import BridgeConfig, TableSpec
from cdc_bridge.errors import FilterError, IdentifierError
from cdc_bridge.identifiers import QualifiedName


@dataclass(frozen=True)
class ColumnFacts:
    """What a mapping needs to know of one column (catalog query check_column_facts)."""

    name: str
    type: str
    required: bool  # an insert must give a value: NOT NULL, no default, not generated
    generated: bool  # the table makes its value: a sequence, identity or default
    labels: tuple[str, ...] | None = None  # an enum's values
    checks: tuple[str, ...] = ()  # one-column CHECK constraints, as defined

    def allowed_values(self) -> tuple[str, ...] | None:
        """The values the column can hold, where an enum or a CHECK lists them."""
        if self.labels is not None:
            return self.labels
        for check in self.checks:
            literals = re.findall(r"'((?:[^']|'')*)'", check)
            if literals and (" IN " in check.upper() or "ANY" in check.upper()):
                return tuple(v.replace("''", "'") for v in literals)
        return None


@dataclass(frozen=True)
class TableFacts:
    """What the catalog says about one table (None columns: the table does not exist)."""

    columns: tuple[str, ...] | None
    unique_keys: tuple[frozenset[str], ...]
    column_facts: dict[str, ColumnFacts] = field(default_factory=dict)


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
    facts = {
        name: ColumnFacts(name, kind, required, generated, _tuple(labels), tuple(checks))
        for name, kind, required, generated, labels, checks in conn.execute(
            queries.query("check_column_facts"), params
        )
    }
    return TableFacts(columns=columns, unique_keys=unique, column_facts=facts)


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


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
    problems += mapping_problems(spec, facts)
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


def mapping_problems(spec: TableSpec, facts: TableFacts) -> list[str]:
    """Where the table's entity mapping (`fields`, `xref`, `defaults`) does not fit its
    columns (pure: no database)."""
    if spec.fields is None and not spec.defaults:
        return []
    assert facts.columns is not None
    existing = set(facts.columns)
    where = f'tables."{spec.label}"'
    problems: list[str] = []
    for name, rule in (spec.fields or {}).items():
        if rule.column is not None and rule.column not in existing:
            problems.append(
                f"{where}.fields.{name}: column {rule.column!r} does not exist in "
                f"{spec.name.dotted}; fix: correct its spelling (names are case-sensitive)"
            )
        elif rule.column is not None and rule.map is not None:
            problems += _map_gaps(spec, name, rule.map, facts.column_facts.get(rule.column))
        if rule.expr is not None:
            problems += _expr_problems(spec, name, rule.expr, existing)
    problems += [
        f"{where}.defaults: column {column!r} does not exist in {spec.name.dotted}; "
        "fix: correct its spelling"
        for column in spec.defaults
        if column not in existing
    ]
    problems += _generated_key_problems(spec, facts)
    problems += _uncovered_required(spec, facts)
    return problems


def _map_gaps(
    spec: TableSpec, name: str, value_map: dict[Any, Any], column: ColumnFacts | None
) -> list[str]:
    allowed = None if column is None else column.allowed_values()
    if column is None or allowed is None:
        return []
    mapped = {str(v).strip() for v in value_map}
    gaps = [v for v in allowed if v.strip() not in mapped]
    if not gaps:
        return []
    return [
        f'tables."{spec.label}".fields.{name}.map: {spec.name.dotted}.{column.name} '
        f"can hold {', '.join(map(repr, gaps))}, which the map does not cover, so such a row "
        "could not be synced; fix: map every value"
    ]


def _expr_problems(spec: TableSpec, name: str, expr: str, existing: set[str]) -> list[str]:
    try:
        columns = referenced_columns(parse_expression(expr))
    except (FilterError, IdentifierError) as exc:
        return [f'tables."{spec.label}".fields.{name}.expr: {exc}']
    captured = existing if spec.synced_columns is None else set(spec.synced_columns)
    return [
        f'tables."{spec.label}".fields.{name}.expr: column {column!r} is not '
        + ("in the table" if column not in existing else "captured (not a synced field)")
        + "; fix: use the row's own synced columns"
        for column in columns
        if column not in captured
    ]


def _generated_key_problems(spec: TableSpec, facts: TableFacts) -> list[str]:
    if spec.xref is None or not spec.key:
        return []
    column = facts.column_facts.get(spec.key[0])
    if column is None or column.generated:
        return []
    return [
        f'tables."{spec.label}".xref: key column {spec.key[0]!r} has no sequence, identity '
        "or default, so a record arriving here could not get a key; fix: give it one "
        "(e.g. bigint GENERATED BY DEFAULT AS IDENTITY), or map the entity key to a column"
    ]


def _uncovered_required(spec: TableSpec, facts: TableFacts) -> list[str]:
    """NOT NULL columns without a default that no received field or default fills."""
    if spec.fields is None or not (spec.receives_whole_rows or spec.key_owned_by_peer):
        return []
    covered = {r.column for r in spec.fields.values() if r.column is not None}
    covered |= set(spec.key) | set(spec.defaults)
    missing = [c.name for c in facts.column_facts.values() if c.required and c.name not in covered]
    return [
        f'tables."{spec.label}": column {column!r} is NOT NULL without a default, and no '
        "field fills it, so a record arriving here could not be inserted; fix: map a field "
        f"to it, or set defaults: {{{column}: ...}}"
        for column in missing
    ]


def value_problems(
    spec: TableSpec, facts: TableFacts, conn: psycopg.Connection[Any]
) -> list[str]:
    """Map values and defaults that are not valid input for their column's type."""
    problems: list[str] = []
    wanted: list[tuple[str, str, Any]] = [
        (f"fields.{name}.map", rule.column, value)
        for name, rule in (spec.fields or {}).items()
        if rule.column is not None
        for value in (rule.map or {})
    ]
    wanted += [("defaults", column, value) for column, value in spec.defaults.items()]
    for key, column, value in wanted:
        kind = facts.column_facts.get(column)
        if kind is None or value is None:
            continue
        try:
            with conn.transaction():
                conn.execute(
                    queries.query("check_value_input", type=sql.SQL(kind.type)),
                    {"value": _as_input(value)},
                )
        except psycopg.errors.DataError as exc:
            problems.append(
                f'tables."{spec.label}".{key}: {value!r} is not a valid {kind.type} for '
                f"{column} ({exc.diag.message_primary}); fix: write a value the column takes"
            )
    return problems


def _as_input(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def mapping_preflight(config: BridgeConfig, conn: psycopg.Connection[Any]) -> list[str]:
    """What `run` and `serve` refuse to start with: mapped tables whose mapping does not
    fit their columns (the rest of `check` is left to `check`)."""
    problems: list[str] = []
    for spec in config.table_specs:
        if spec.fields is None and not spec.defaults:
            continue
        facts = read_table_facts(conn, spec.name)
        if facts.columns is None:
            continue  # `check` reports it; the relay's own errors name it too
        problems += mapping_problems(spec, facts) + value_problems(spec, facts, conn)
    return problems


def check_database(config: BridgeConfig, conn: psycopg.Connection[Any]) -> list[str]:
    """Every problem between the config and the database behind `conn`."""
    problems: list[str] = []
    for spec in config.table_specs:
        facts = read_table_facts(conn, spec.name)
        problems += table_problems(spec, facts)
        if facts.columns is not None:
            problems += value_problems(spec, facts, conn)
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
