"""Per-table capture functions, generated from the config. Never connects to a database.

A generic function would turn the row into jsonb (`to_jsonb(NEW)`) and look up each
configured column in it with a query; a generated one names the columns, so PL/pgSQL
evaluates plain expressions and runs one INSERT per change. The SQL skeleton is the
`create_table_capture_function` block of capture.sql; this module fills in the
expressions for one table.

Whole-row tables (`sor: local`, `handoff`) ship every column the table has *now*, so
their fields stay `to_jsonb(NEW)` (no column list is known without a database, and an
added column ships without a reinstall); their updates find the changed columns with one
sub-select inside the INSERT.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

from psycopg import sql

from cdc_bridge import sql as queries
from cdc_bridge.config import BridgeConfig, TableSpec

Row = Literal["NEW", "OLD"]

# jsonb_build_object takes at most 100 arguments (FUNC_MAX_ARGS): 50 name/value pairs.
_PAIRS_PER_CALL = 50

_NO_FIELDS = sql.SQL("'{}'::jsonb")

_WHOLE_ROWS = sql.SQL(
    "\n        v_new := pg_catalog.to_jsonb(NEW);\n        v_old := pg_catalog.to_jsonb(OLD);"
)

_SECURITY = {
    "invoker": sql.SQL("SECURITY INVOKER"),
    "definer": sql.SQL("SECURITY DEFINER SET search_path = pg_catalog, pg_temp"),
}


def capture_function_name(spec: TableSpec) -> str:
    """Stable per table, short enough for any label (identifiers stop at 63 bytes)."""
    return "capture_v2_" + hashlib.sha256(spec.label.encode()).hexdigest()[:16]


def column(row: Row, name: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.SQL(row), sql.Identifier(name))


def _differs(name: str) -> sql.Composable:
    return sql.SQL("{} IS DISTINCT FROM {}").format(column("NEW", name), column("OLD", name))


def json_object(row: Row, columns: Sequence[str]) -> sql.Composable:
    """jsonb of the named columns of NEW or OLD, as to_jsonb(row) would give them."""
    if not columns:
        return _NO_FIELDS
    calls = []
    for start in range(0, len(columns), _PAIRS_PER_CALL):
        pairs = (
            sql.SQL("{}, {}").format(sql.Literal(c), column(row, c))
            for c in columns[start : start + _PAIRS_PER_CALL]
        )
        calls.append(sql.SQL("pg_catalog.jsonb_build_object({})").format(sql.SQL(", ").join(pairs)))
    return sql.SQL(" || ").join(calls)


def _when_changed(name: str, row: Row) -> sql.Composable:
    """`{name: row.name}` when the field changed, else `{}`."""
    return sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(
        _differs(name), json_object(row, [name]), _NO_FIELDS
    )


def _key_changed(spec: TableSpec) -> sql.Composable:
    return sql.SQL(" OR ").join(_differs(k) for k in spec.key)


def _changed_columns(spec: TableSpec) -> sql.Composable:
    """The shipped fields an update changed, sorted by name (byte order)."""
    if spec.ships_whole_rows:
        return sql.SQL(
            "ARRAY(SELECT n.key FROM pg_catalog.jsonb_each(v_new) AS n "
            'WHERE n.value IS DISTINCT FROM v_old -> n.key ORDER BY n.key COLLATE "C")'
        )
    names = sorted(spec.shipped_fields, key=lambda n: n.encode())
    cases = (
        sql.SQL("CASE WHEN {} THEN {} END").format(_differs(n), sql.Literal(n)) for n in names
    )
    return sql.SQL("pg_catalog.array_remove(ARRAY[{}]::text[], NULL)").format(
        sql.SQL(", ").join(cases)
    )


def _update_fields(spec: TableSpec) -> sql.Composable:
    """Fields of an update: fields owned by `both` ship only when they changed."""
    if spec.ships_whole_rows:
        return sql.SQL("v_new")
    both = set(spec.both_fields)
    always = [c for c in (*spec.key, *spec.shipped_fields) if c not in both]
    parts = [json_object("NEW", always), *(_when_changed(b, "NEW") for b in spec.both_fields)]
    return sql.SQL(" || ").join(parts)


def _update_old(spec: TableSpec) -> sql.Composable:
    """Previous values of the changed `both` fields (conflict detection); NULL if none."""
    if not spec.both_fields:
        return sql.SQL("NULL")
    parts = sql.SQL(" || ").join(_when_changed(b, "OLD") for b in spec.both_fields)
    return sql.SQL("nullif({}, {})").format(parts, _NO_FIELDS)


def _insert_fields(spec: TableSpec) -> sql.Composable:
    if spec.ships_whole_rows:
        return sql.SQL("pg_catalog.to_jsonb(NEW)")
    return json_object("NEW", [*spec.key, *spec.shipped_fields])


def create_capture_function(config: BridgeConfig, spec: TableSpec) -> sql.Composable:
    return queries.query(
        "create_table_capture_function",
        schema=config.bridge_schema,
        function=sql.Identifier(config.bridge_schema, capture_function_name(spec)),
        security=_SECURITY[config.database.capture_security],
        system=sql.Literal(config.system),
        label=sql.Literal(spec.label),
        old_key=json_object("OLD", spec.key),
        new_key=json_object("NEW", spec.key),
        key_changed=_key_changed(spec),
        whole_rows=_WHOLE_ROWS if spec.ships_whole_rows else sql.SQL(""),
        fields=_insert_fields(spec),
        update_fields=_update_fields(spec),
        update_old=_update_old(spec),
        changed=_changed_columns(spec),
        comment=sql.Literal(f"cdc-bridge: captures changes of {spec.label} (generated)"),
    )


def drop_capture_function(config: BridgeConfig, spec: TableSpec) -> sql.Composable:
    return queries.query(
        "drop_table_capture_function",
        function=sql.Identifier(config.bridge_schema, capture_function_name(spec)),
    )
