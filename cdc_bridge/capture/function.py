"""Per-table capture functions, generated from the config. Never connects to a database.

A generic function would turn the row into jsonb (`to_jsonb(NEW)`) and look up each
configured column in it with a query; a generated one names the columns, so PL/pgSQL
evaluates plain expressions. There is one function per table and kind of change
(`CaptureKind`), each a single INSERT: the triggers choose the kind with their WHEN
clauses, so no function branches or keeps a variable (see `create_table_capture_function`
in capture.sql for why that matters). This module fills in the expressions.

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

from cdc_bridge import outbox
from cdc_bridge import sql as queries
from cdc_bridge.config import BridgeConfig, TableSpec

Row = Literal["NEW", "OLD"]

# jsonb_build_object takes at most 100 arguments (FUNC_MAX_ARGS): 50 name/value pairs.
_PAIRS_PER_CALL = 50

_NO_FIELDS = sql.SQL("'{}'::jsonb")

_SECURITY = sql.SQL("SECURITY DEFINER SET search_path = pg_catalog, pg_temp")


CaptureKind = Literal["ins", "upd", "rekey", "del"]
CAPTURE_KINDS: tuple[CaptureKind, ...] = ("ins", "upd", "rekey", "del")


def capture_function_name(spec: TableSpec, kind: CaptureKind) -> str:
    """Stable per table, short enough for any label (identifiers stop at 63 bytes)."""
    return f"capture_v3_{_label_digest(spec)}_{kind}"


def legacy_capture_function_name(spec: TableSpec) -> str:
    """The single per-table function of earlier installs (replaced by the per-kind ones)."""
    return f"capture_v2_{_label_digest(spec)}"


def _label_digest(spec: TableSpec) -> str:
    return hashlib.sha256(spec.label.encode()).hexdigest()[:16]


def column(row: Row, name: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.SQL(row), sql.Identifier(name))


def differs(name: str) -> sql.Composable:
    """The column's stored value changed, byte for byte.

    Not `IS DISTINCT FROM`: json, xml and other types have no `=` (installing or
    updating would fail), and `=` calls 1.0 and 1.00, or -0 and 0, the same although
    `row::text` shows them apart. The record image operator (`*<>`) compares what is
    stored, for every type, NULLs included.
    """
    return sql.SQL("(ROW({})::record) *<> (ROW({})::record)").format(
        column("NEW", name), column("OLD", name)
    )


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
        differs(name), json_object(row, [name]), _NO_FIELDS
    )


def _changed_columns(spec: TableSpec) -> sql.Composable:
    """The shipped fields an update changed, sorted by name (byte order)."""
    names = sorted(spec.shipped_fields, key=lambda n: n.encode())
    cases = (sql.SQL("CASE WHEN {} THEN {} END").format(differs(n), sql.Literal(n)) for n in names)
    return sql.SQL("pg_catalog.array_remove(ARRAY[{}]::text[], NULL)").format(
        sql.SQL(", ").join(cases)
    )


def _update_fields(spec: TableSpec) -> sql.Composable:
    """Fields of an update: fields owned by `both` ship only when they changed."""
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


def _capture_statement(config: BridgeConfig, spec: TableSpec, kind: CaptureKind) -> sql.Composed:
    def insert(block: outbox.CaptureBlock, **parts: sql.Composable) -> sql.Composed:
        origin = capture_origin(config)
        schema = sql.Identifier(config.bridge_schema)
        label = sql.Literal(spec.label)
        return outbox.capture_insert(block, schema=schema, label=label, origin=origin, **parts)

    old_key, new_key = json_object("OLD", spec.key), json_object("NEW", spec.key)
    fields = _insert_fields(spec)
    if kind == "del":
        return insert("capture_delete", old_key=old_key)
    if kind == "ins":
        return insert("capture_insert", new_key=new_key, fields=fields)
    if kind == "rekey":
        return insert("capture_rekey", old_key=old_key, new_key=new_key, fields=fields)
    if spec.ships_whole_rows:
        return insert("capture_update_whole_row", new_key=new_key)
    return insert(
        "capture_update",
        new_key=new_key,
        fields=_update_fields(spec),
        old=_update_old(spec),
        changed=_changed_columns(spec),
    )


def capture_origin(config: BridgeConfig) -> sql.Composed:
    """Who made the change: the peer only for the bridge's own apply (docs/security.md)."""
    return _fragment(
        "capture_origin",
        system=sql.Literal(config.system),
        peer=sql.Literal(config.peer.name),
        role=sql.Literal(config.database.relay_role),
    )


def _fragment(name: str, **parts: sql.Composable) -> sql.Composed:
    """A SQL block that is part of a statement (no trailing newline)."""
    return sql.SQL(queries.raw(name).strip()).format(**parts)


def capture_function_body(config: BridgeConfig, spec: TableSpec, kind: CaptureKind) -> sql.Composed:
    """The function's body, exactly as PostgreSQL keeps it (`pg_proc.prosrc`)."""
    body = _fragment(
        "capture_function_body",
        capture=_capture_statement(config, spec, kind),
        row=sql.SQL("OLD" if kind == "del" else "NEW"),
    )
    return sql.Composed([sql.SQL("\n"), body, sql.SQL("\n")])


def create_capture_function(
    config: BridgeConfig, spec: TableSpec, kind: CaptureKind
) -> sql.Composable:
    return queries.query(
        "create_table_capture_function",
        function=sql.Identifier(config.bridge_schema, capture_function_name(spec, kind)),
        security=_SECURITY,
        body=capture_function_body(config, spec, kind),
        comment=sql.Literal(f"cdc-bridge: captures {_KIND_TEXT[kind]} of {spec.label} (generated)"),
    )


_KIND_TEXT: dict[CaptureKind, str] = {
    "ins": "inserts",
    "upd": "updates",
    "rekey": "updates of the key",
    "del": "deletes",
}


def drop_capture_functions(config: BridgeConfig, spec: TableSpec) -> list[sql.Composable]:
    """Every capture function the table may have, this version's and earlier ones."""
    names = [capture_function_name(spec, kind) for kind in CAPTURE_KINDS]
    names.append(legacy_capture_function_name(spec))
    return [drop_capture_function(config, name) for name in names]


def drop_capture_function(config: BridgeConfig, name: str) -> sql.Composable:
    return queries.query(
        "drop_table_capture_function", function=sql.Identifier(config.bridge_schema, name)
    )
