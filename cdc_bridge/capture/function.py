"""Per-table capture functions, generated from the config. Never connects to a database.

Capture is statement-level: one AFTER trigger per kind of statement (`CaptureKind`), with
transition tables, calls a generated function whose body is a single `INSERT ... SELECT`
over the statement's old and new rows. A statement that touches 100k rows makes one
set-based insert, not 100k PL/pgSQL calls each starting an executor; a one-row statement
makes one call, as a row trigger did. The function names the columns, so PostgreSQL
evaluates plain expressions; this module fills them in.

An update's old and new rows are paired by key. A key that only the old rows hold left
(a key change, or a row leaving the `where` filter shows as such below), one that only the
new rows hold arrived: the peer sees the old key go and the new one arrive. Each key thus
appears at most once per statement, so per-key order is the order of statements.

Whole-row tables (`sor: local`, `handoff`) ship every column the table has *now*, so
their fields stay `to_jsonb(n.*)` (no column list is known without a database, and an
added column ships without a reinstall). Their updates record no `changed` list: the
relay ships whole rows whatever changed, and only per-field tables' SOR filter and
conflict rules read it.

Fields pass through the table's wire function (`wire_function_name`), which the install
writes from the catalog (capture.sql: create_wire_function): it puts back the values
jsonb cannot hold exactly (-0, json text, the jsonb document `null`, array bounds) as
their text. For a table without such columns it is `SELECT fields`, inlined: no cost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

from psycopg import sql

from cdc_bridge import outbox
from cdc_bridge import sql as queries
from cdc_bridge.capture.filters import for_trigger
from cdc_bridge.config import BridgeConfig, TableSpec

Row = Literal["NEW", "OLD"]
# Aliases of the transition tables inside a capture function (new rows, old rows).
Alias = Literal["n", "o"]
NEW_ROWS = "cdc_bridge_new"
OLD_ROWS = "cdc_bridge_old"

# jsonb_build_object takes at most 100 arguments (FUNC_MAX_ARGS): 50 name/value pairs.
_PAIRS_PER_CALL = 50

_NO_FIELDS = sql.SQL("'{}'::jsonb")
# Whole rows of the transition tables, as function arguments (`n`: a column may be named n).
_NEW_ROW = sql.SQL("n.*")
_OLD_ROW = sql.SQL("o.*")
# The wire function's `fields` for "the whole row" (it computes to_jsonb itself).
_WHOLE_ROW = sql.SQL("NULL::jsonb")

_SECURITY = sql.SQL("SECURITY DEFINER SET search_path = pg_catalog, pg_temp")
# An update's function joins old and new rows: capture.sql, capture_join_settings.
_JOIN_SETTINGS = sql.SQL("\n" + queries.raw("capture_join_settings").strip())


CaptureKind = Literal["ins", "upd", "del"]
CAPTURE_KINDS: tuple[CaptureKind, ...] = ("ins", "upd", "del")
# What earlier versions installed: dropped by an install (the row-level `capture_v3_`
# functions, one per kind, and the single `capture_v2_` function before them).
_LEGACY_KINDS = ("ins", "upd", "rekey", "del")


def capture_function_name(spec: TableSpec, kind: CaptureKind) -> str:
    """Stable per table, short enough for any label (identifiers stop at 63 bytes)."""
    return f"capture_v5_{_label_digest(spec)}_{kind}"


def legacy_capture_function_names(spec: TableSpec) -> list[str]:
    """The capture functions of earlier installs (replaced by this version's): v4 wrote
    fields as to_jsonb alone, v3 was row-level, v2 one function."""
    digest = _label_digest(spec)
    return (
        [f"capture_v4_{digest}_{kind}" for kind in CAPTURE_KINDS]
        + [f"capture_v3_{digest}_{kind}" for kind in _LEGACY_KINDS]
        + [f"capture_v2_{digest}"]
    )


def wire_function_name(spec: TableSpec) -> str:
    """The table's wire function (exact values), written at install from the catalog."""
    return f"wire_v1_{_label_digest(spec)}"


def exact_fields(
    schema: str, spec: TableSpec, row: sql.Composable, fields: sql.Composable | None
) -> sql.Composed:
    """`fields` (jsonb of columns of `row`; None: the whole row) with the values jsonb
    changes given as their text. For a table that holds no such types PostgreSQL inlines
    the call to `COALESCE(fields, to_jsonb(row))`: to_jsonb alone for the whole row."""
    given = _WHOLE_ROW if fields is None else fields
    return sql.SQL("{}({}, {})").format(
        sql.Identifier(schema, wire_function_name(spec)), row, given
    )


def listening_key(schema: str) -> int:
    """The advisory lock key an idle relay holds while it waits for NOTIFY (signed 64-bit).

    One per bridge schema, as the NOTIFY channel is. See capture_wake in capture.sql for
    the handshake.
    """
    digest = hashlib.sha256(f"cdc-bridge listening {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _wake(config: BridgeConfig, spec: TableSpec) -> sql.Composed:
    """Notifies an idle relay, once per statement (capture.sql: capture_wake)."""
    return _fragment(
        "capture_wake",
        key=sql.Literal(listening_key(config.bridge_schema)),
        channel=sql.Literal(config.bridge_schema),
        label=sql.Literal(spec.label),
    )


def _label_digest(spec: TableSpec) -> str:
    return hashlib.sha256(spec.label.encode()).hexdigest()[:16]


def column(row: Row | Alias, name: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.SQL(row), sql.Identifier(name))


def differs(name: str, new: Row | Alias = "n", old: Row | Alias = "o") -> sql.Composable:
    """The column's stored value changed, byte for byte.

    Not `IS DISTINCT FROM`: json, xml and other types have no `=` (installing or
    updating would fail), and `=` calls 1.0 and 1.00, or -0 and 0, the same although
    `row::text` shows them apart. The record image operator (`*<>`) compares what is
    stored, for every type, NULLs included.
    """
    return sql.SQL("(ROW({})::record) *<> (ROW({})::record)").format(
        column(new, name), column(old, name)
    )


def json_object(row: Alias, columns: Sequence[str]) -> sql.Composable:
    """jsonb of the named columns of a new or old row, as to_jsonb(row) would give them."""
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


def _when_changed(name: str, row: Alias) -> sql.Composable:
    """`{name: row.name}` when the field changed, else `{}`."""
    return sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(
        differs(name), json_object(row, [name]), _NO_FIELDS
    )


def _changed_columns(spec: TableSpec) -> sql.Composable:
    """The shipped fields an update changed, sorted by name (byte order)."""
    if spec.ships_whole_rows:
        return sql.SQL("NULL::text[]")
    names = sorted(spec.shipped_fields, key=lambda n: n.encode())
    cases = (sql.SQL("CASE WHEN {} THEN {} END").format(differs(n), sql.Literal(n)) for n in names)
    return sql.SQL("pg_catalog.array_remove(ARRAY[{}]::text[], NULL)").format(
        sql.SQL(", ").join(cases)
    )


def _update_fields(spec: TableSpec) -> sql.Composable | None:
    """Fields of an update (None: the whole row); fields owned by `both` ship only when
    they changed."""
    if spec.ships_whole_rows:
        return _insert_fields(spec)
    both = set(spec.both_fields)
    always = [c for c in (*spec.key, *spec.shipped_fields) if c not in both]
    parts = [json_object("n", always), *(_when_changed(b, "n") for b in spec.both_fields)]
    return sql.SQL(" || ").join(parts)


def _update_old(config: BridgeConfig, spec: TableSpec) -> sql.Composable:
    """Previous values of the changed `both` fields (conflict detection); NULL if none."""
    if not spec.both_fields:
        return sql.SQL("NULL::jsonb")
    parts = sql.SQL(" || ").join(_when_changed(b, "o") for b in spec.both_fields)
    return sql.SQL("nullif({}, {})").format(
        exact_fields(config.bridge_schema, spec, _OLD_ROW, parts), _NO_FIELDS
    )


def _insert_fields(spec: TableSpec) -> sql.Composable | None:
    """The fields of an insert; None for the whole row (to_jsonb in the wire function)."""
    if spec.ships_whole_rows:
        return None
    return json_object("n", [*spec.key, *spec.shipped_fields])


def _any_changed(spec: TableSpec) -> sql.Composable:
    """Whether an update changed anything that ships (no-op updates ship nothing)."""
    if spec.ships_whole_rows:
        # Stored images, not `=`: see `differs` (a json column made every update fail).
        return sql.SQL("(n.*) *<> (o.*)")
    return sql.SQL(" OR ").join(differs(c) for c in spec.shipped_fields)


def _same_key(spec: TableSpec) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(column("n", c), column("o", c)) for c in spec.key
    )


def in_filter(spec: TableSpec, row: Alias) -> sql.Composable:
    """Whether the row is inside the table's `where` filter (always, without one)."""
    if spec.where is None:
        return sql.SQL("true")
    return sql.SQL("coalesce(({}), false)").format(sql.SQL(for_trigger(spec.where, row)))


def _capture_statement(config: BridgeConfig, spec: TableSpec, kind: CaptureKind) -> sql.Composed:
    parts: dict[str, sql.Composable] = {
        "label": sql.Literal(spec.label),
        "origin": capture_origin(config),
        "new_rows": sql.Identifier(NEW_ROWS),
        "old_rows": sql.Identifier(OLD_ROWS),
        "old_key": json_object("o", spec.key),
        "new_key": json_object("n", spec.key),
        "insert_fields": exact_fields(config.bridge_schema, spec, _NEW_ROW, _insert_fields(spec)),
        "old_in": in_filter(spec, "o"),
        "new_in": in_filter(spec, "n"),
        "wake": _wake(config, spec),
    }
    schema = config.bridge_schema
    if kind == "del":
        return outbox.capture_body("capture_delete", schema, **parts)
    if kind == "ins":
        return outbox.capture_body("capture_insert", schema, **parts)
    return outbox.capture_body(
        "capture_update" if spec.where is None else "capture_update_filtered",
        schema,
        same_key=_same_key(spec),
        changed_any=_any_changed(spec),
        update_fields=exact_fields(config.bridge_schema, spec, _NEW_ROW, _update_fields(spec)),
        old=_update_old(config, spec),
        changed=_changed_columns(spec),
        **parts,
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
    return sql.Composed([sql.SQL("\n"), _capture_statement(config, spec, kind), sql.SQL("\n")])


def create_capture_function(
    config: BridgeConfig, spec: TableSpec, kind: CaptureKind
) -> sql.Composable:
    return queries.query(
        "create_table_capture_function",
        function=sql.Identifier(config.bridge_schema, capture_function_name(spec, kind)),
        security=_SECURITY,
        settings=_JOIN_SETTINGS if kind == "upd" else sql.SQL(""),
        body=capture_function_body(config, spec, kind),
        comment=sql.Literal(f"cdc-bridge: captures {_KIND_TEXT[kind]} of {spec.label} (generated)"),
    )


_KIND_TEXT: dict[CaptureKind, str] = {"ins": "inserts", "upd": "updates", "del": "deletes"}


def drop_capture_functions(config: BridgeConfig, spec: TableSpec) -> list[sql.Composable]:
    """Every capture function the table may have, this version's and earlier ones."""
    names = [capture_function_name(spec, kind) for kind in CAPTURE_KINDS]
    names += legacy_capture_function_names(spec)
    return [drop_capture_function(config, name) for name in names]


def drop_capture_function(config: BridgeConfig, name: str) -> sql.Composable:
    return queries.query(
        "drop_table_capture_function", function=sql.Identifier(config.bridge_schema, name)
    )
