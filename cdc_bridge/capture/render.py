"""Config -> install SQL. Never connects to a database.

The install is: the bridge schema and its tables, the versioned functions, then per
table a few thin triggers whose WHEN clauses keep PL/pgSQL out of no-op updates, then
grants for the least-privilege relay role. Each table's triggers carry a hash of their
definition (`COMMENT ON TRIGGER`), which `triggers status` compares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from psycopg import sql

from cdc_bridge import sql as queries
from cdc_bridge.capture.function import (
    CAPTURE_KINDS,
    NEW_ROWS,
    OLD_ROWS,
    CaptureKind,
    capture_function_body,
    capture_function_name,
    create_capture_function,
    differs,
    drop_capture_function,
    drop_capture_functions,
    legacy_capture_function_names,
    wire_function_name,
)
from cdc_bridge.config import BridgeConfig, TableMode, TableSpec

# Base objects, in install order. Other stages add their tables by listing blocks here.
BASE_BLOCKS: tuple[str, ...] = (
    "create_schema",
    "create_outbox",
    "create_installed_tables",
    "create_handoffs",
    "retire_relay_listening",
    "retire_notify_function",
    "create_guard_function",
    "create_truncate_guard_function",
    "create_wire_function",
)
# Tables of the later stages, one line per block (each stage owns its own .sql file).
EXTRA_BASE_BLOCKS: list[str] = [
    "relay_create_batches",
    "relay_create_attempts",
    "relay_create_delivered",
    "relay_create_failed",
    "inbound_create_applied_keys",
    "inbound_create_conflicts",
    "inbound_create_poll_cursors",
    "peer_create_xref",
    "entity_create_xref",
    "ops_create_replays",
    "ops_create_skips",
    "ops_create_snapshots",
]

TRIGGER_PREFIX = "cdc_bridge_"
STAMP_PREFIX = "cdc-bridge definition "


Transition = tuple[Literal["OLD", "NEW"], str]


@dataclass(frozen=True)
class Trigger:
    name: str
    timing: Literal["BEFORE", "AFTER"]
    events: str  # e.g. "UPDATE" or "INSERT OR DELETE"
    level: Literal["ROW", "STATEMENT"]
    function: str
    args: tuple[str, ...]
    when: sql.Composable | None = None
    # Transition tables of a statement-level trigger: ("OLD", name), ("NEW", name).
    referencing: tuple[Transition, ...] = ()


# ------------------------------------------------------------------ helpers


def pg_text_array(items: Iterable[str]) -> str:
    """A PostgreSQL text[] literal body, every element quoted."""
    quoted = ('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items)
    return "{" + ",".join(quoted) + "}"


def to_text(statements: Sequence[sql.Composable]) -> str:
    """Statements as one SQL script (no connection needed to quote)."""
    return "\n".join(_terminated(s.as_string(None)) for s in statements)


def _terminated(text: str) -> str:
    text = text.strip()
    return text if text.endswith(";") else text + ";"


def _any_changed(columns: Sequence[str]) -> sql.Composable:
    return sql.SQL(" OR ").join(differs(c, "NEW", "OLD") for c in columns)


def _not_from_peer(config: BridgeConfig) -> sql.Composable:
    """Every write but the bridge's own apply of the peer's changes (docs/security.md)."""
    return sql.SQL(queries.raw("guard_local_write").strip()).format(
        peer=sql.Literal(config.peer.name), role=sql.Literal(config.database.relay_role)
    )


def _all(*parts: sql.Composable | None) -> sql.Composable | None:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return sql.SQL(" AND ").join(sql.SQL("({})").format(p) for p in present)


# ------------------------------------------------------------------ triggers


def capture_triggers(config: BridgeConfig, spec: TableSpec) -> list[Trigger]:
    if not spec.captures:
        return []

    def capture(kind: CaptureKind, events: str, *tables: Transition) -> Trigger:
        fn = capture_function_name(spec, kind)
        name = f"{TRIGGER_PREFIX}capture_{kind}"
        return Trigger(name, "AFTER", events, "STATEMENT", fn, (), referencing=tables)

    old: Transition = ("OLD", OLD_ROWS)
    new: Transition = ("NEW", NEW_ROWS)
    triggers = [capture("ins", "INSERT", new), capture("upd", "UPDATE", old, new)]
    if not spec.key_owned_by_peer:
        triggers.append(capture("del", "DELETE", old))
    return triggers


def guard_triggers(config: BridgeConfig, spec: TableSpec) -> list[Trigger]:
    if not spec.guard:
        return []
    local = _not_from_peer(config)
    owner = config.peer.name
    key = pg_text_array(spec.key)
    fn = "guard_v1"
    name = f"{TRIGGER_PREFIX}guard"
    if spec.mode is TableMode.PEER:
        return [
            Trigger(
                name,
                "BEFORE",
                "INSERT OR UPDATE OR DELETE",
                "ROW",
                fn,
                (spec.label, owner, "", "", key),
                local,
            ),
        ]
    if spec.mode is TableMode.HANDOFF:
        return [
            Trigger(
                name,
                "BEFORE",
                "UPDATE OR DELETE",
                "ROW",
                fn,
                (spec.label, owner, "", "handoff", key),
                local,
            ),
        ]
    triggers = []
    if spec.peer_fields:
        triggers.append(
            Trigger(
                f"{name}_fields",
                "BEFORE",
                "UPDATE",
                "ROW",
                fn,
                (spec.label, owner, pg_text_array(spec.peer_fields), "", key),
                _all(local, _any_changed(spec.peer_fields)),
            )
        )
    if spec.key_owned_by_peer:
        triggers.append(
            Trigger(
                f"{name}_rows",
                "BEFORE",
                "INSERT OR DELETE",
                "ROW",
                fn,
                (spec.label, owner, "", "", key),
                local,
            )
        )
    return triggers


def truncate_trigger(spec: TableSpec) -> Trigger:
    """Every synced table refuses TRUNCATE: it fires no row trigger, so a sending side
    would not capture it, and a receiving side would silently drop what the peer sent."""
    return Trigger(
        f"{TRIGGER_PREFIX}no_truncate",
        "BEFORE",
        "TRUNCATE",
        "STATEMENT",
        "refuse_truncate_v1",
        (spec.label,),
    )


def table_triggers(config: BridgeConfig, spec: TableSpec) -> list[Trigger]:
    return [
        *guard_triggers(config, spec),
        *capture_triggers(config, spec),
        truncate_trigger(spec),
    ]


def _create_trigger(config: BridgeConfig, spec: TableSpec, trigger: Trigger) -> sql.Composable:
    when = sql.SQL("") if trigger.when is None else sql.SQL("\n    WHEN ({})").format(trigger.when)
    tables = (
        sql.SQL("{} TABLE AS {}").format(sql.SQL(side), sql.Identifier(name))
        for side, name in trigger.referencing
    )
    referencing = sql.SQL(" ").join(tables)
    if trigger.referencing:
        referencing = sql.SQL("\n    REFERENCING {}").format(referencing)
    return sql.SQL(
        "CREATE TRIGGER {name} {timing} {events} ON {table}{referencing}\n"
        "    FOR EACH {level}{when}\n"
        "    EXECUTE FUNCTION {function}({args})"
    ).format(
        name=sql.Identifier(trigger.name),
        timing=sql.SQL(trigger.timing),
        events=sql.SQL(trigger.events),
        table=spec.name.identifier,
        referencing=referencing,
        level=sql.SQL(trigger.level),
        when=when,
        function=sql.Identifier(config.bridge_schema, trigger.function),
        args=sql.SQL(", ").join(sql.Literal(a) for a in trigger.args),
    )


def _drop_trigger(spec: TableSpec, name: str) -> sql.Composable:
    return sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
        sql.Identifier(name), spec.name.identifier
    )


ALL_TRIGGER_NAMES = tuple(
    TRIGGER_PREFIX + n
    for n in (
        "guard",
        "guard_fields",
        "guard_rows",
        "capture_ins",
        "capture_upd",
        "capture_rekey",
        "capture_del",
        "capture_enter",
        "capture_leave",
        "notify",
        "no_truncate",
    )
)


# ------------------------------------------------------------------ per table


def definition_hash(config: BridgeConfig, spec: TableSpec) -> str:
    """A stable hash of what is installed on the table (its capture function and triggers)."""
    text = to_text(
        _capture_function(config, spec)
        + [_create_trigger(config, spec, t) for t in table_triggers(config, spec)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _capture_kinds(config: BridgeConfig, spec: TableSpec) -> list[CaptureKind]:
    """The kinds of capture function the table's triggers call, in a fixed order."""
    called = {t.function for t in capture_triggers(config, spec)}
    return [k for k in CAPTURE_KINDS if capture_function_name(spec, k) in called]


def capture_function_sources(config: BridgeConfig, spec: TableSpec) -> dict[str, str]:
    """Name -> body text (`pg_proc.prosrc`) of each capture function the table needs."""
    sources = {}
    for kind in _capture_kinds(config, spec):
        body = capture_function_body(config, spec, kind).as_string(None)
        sources[capture_function_name(spec, kind)] = body
    return sources


def _capture_function(config: BridgeConfig, spec: TableSpec) -> list[sql.Composable]:
    return [create_capture_function(config, spec, kind) for kind in _capture_kinds(config, spec)]


def _unused_capture(config: BridgeConfig, spec: TableSpec) -> list[sql.Composable]:
    """Capture triggers and functions of an earlier install or config that are not used now.

    The capture on a table is exactly what the config says, so an upgrade from the single
    function of earlier versions, or a config that no longer needs a kind, leaves nothing
    behind that would still fire.
    """
    current = {t.name for t in capture_triggers(config, spec)}
    capture_names = (n for n in ALL_TRIGGER_NAMES if n.startswith(f"{TRIGGER_PREFIX}capture_"))
    statements = [_drop_trigger(spec, n) for n in capture_names if n not in current]
    used = set(_capture_kinds(config, spec))
    names = [capture_function_name(spec, k) for k in CAPTURE_KINDS if k not in used]
    names += legacy_capture_function_names(spec)
    return statements + [drop_capture_function(config, name) for name in names]


def install_wire_function(config: BridgeConfig, spec: TableSpec) -> sql.Composable:
    """Writes the table's wire function from its columns' types, at install (every synced
    table has one: capture, snapshot and reconcile send through it, serve reads through it)."""
    return queries.query(
        "install_wire_function",
        schema=config.bridge_schema,
        relation=spec.name.regclass_literal,
        schema_name=sql.Literal(config.bridge_schema),
        function_name=sql.Literal(wire_function_name(spec)),
    )


def drop_wire_function(config: BridgeConfig, spec: TableSpec) -> sql.Composable:
    return queries.query(
        "drop_wire_function",
        function=sql.Identifier(config.bridge_schema, wire_function_name(spec)),
    )


def install_table(config: BridgeConfig, spec: TableSpec) -> list[sql.Composable]:
    digest = definition_hash(config, spec)
    statements: list[sql.Composable] = [install_wire_function(config, spec)]
    statements += _capture_function(config, spec)
    for trigger in table_triggers(config, spec):
        # Re-running an install replaces the triggers; stale ones from an older config
        # are dropped by the migration that changes the config.
        statements.append(_drop_trigger(spec, trigger.name))
        statements.append(_create_trigger(config, spec, trigger))
        statements.append(
            sql.SQL("COMMENT ON TRIGGER {} ON {} IS {}").format(
                sql.Identifier(trigger.name),
                spec.name.identifier,
                sql.Literal(STAMP_PREFIX + digest),
            )
        )
    statements.append(
        queries.query(
            "record_installed_table",
            schema=config.bridge_schema,
            label=sql.Literal(spec.label),
            relation=spec.name.regclass_literal,
            hash=sql.Literal(digest),
        )
    )
    return statements + _unused_capture(config, spec)


def uninstall_table(config: BridgeConfig, spec: TableSpec) -> list[sql.Composable]:
    statements: list[sql.Composable] = [_drop_trigger(spec, n) for n in ALL_TRIGGER_NAMES]
    statements += drop_capture_functions(config, spec)
    statements.append(drop_wire_function(config, spec))
    statements.append(
        queries.query(
            "forget_installed_table", schema=config.bridge_schema, label=sql.Literal(spec.label)
        )
    )
    return statements


# ------------------------------------------------------------------ whole install


def install_base(config: BridgeConfig) -> list[sql.Composable]:
    name = sql.Literal(config.bridge_schema)
    return [
        queries.query(b, schema=config.bridge_schema, schema_name=name)
        for b in (*BASE_BLOCKS, *EXTRA_BASE_BLOCKS)
    ]


def grants(config: BridgeConfig) -> list[sql.Composable]:
    role = config.database.relay_role
    statements: list[sql.Composable] = [
        queries.query("create_relay_role", role_name=sql.Literal(role)),
        queries.query("grant_bridge_schema", schema=config.bridge_schema, role=role),
        queries.query(
            "grant_bridge_maintain",
            schema_name=sql.Literal(config.bridge_schema),
            role_name=sql.Literal(role),
        ),
    ]
    for spec in config.table_specs:
        block = "grant_write_table" if _receives(spec) else "grant_read_table"
        statements.append(queries.query(block, table=spec.name.identifier, role=role))
        statements.append(
            queries.query(
                "grant_wire_function",
                function=sql.Identifier(config.bridge_schema, wire_function_name(spec)),
                table=spec.name.identifier,
                role=role,
            )
        )
    return statements


def _receives(spec: TableSpec) -> bool:
    return spec.receives_whole_rows or bool(spec.received_fields)


def revokes(config: BridgeConfig) -> list[sql.Composable]:
    role = config.database.relay_role
    statements: list[sql.Composable] = [
        sql.SQL(
            "DO $revoke_table$ BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_roles "
            "WHERE rolname = {role_name}) THEN EXECUTE {command}; END IF; END $revoke_table$"
        ).format(
            role_name=sql.Literal(role),
            command=sql.Literal(
                queries.query("revoke_table", table=spec.name.identifier, role=role).as_string(None)
            ),
        )
        for spec in config.table_specs
    ]
    statements.append(
        queries.query(
            "revoke_bridge_role_in_schema",
            role_name=sql.Literal(role),
            schema_name=sql.Literal(config.bridge_schema),
        )
    )
    return statements


def install_statements(config: BridgeConfig) -> list[sql.Composable]:
    statements = install_base(config)
    for spec in config.table_specs:
        statements += install_table(config, spec)
    return statements + grants(config)


def uninstall_statements(config: BridgeConfig) -> list[sql.Composable]:
    statements: list[sql.Composable] = []
    for spec in config.table_specs:
        statements += [_drop_trigger(spec, n) for n in ALL_TRIGGER_NAMES]
    statements += revokes(config)
    statements.append(queries.query("drop_bridge_schema", schema=config.bridge_schema))
    return statements


def render_install(config: BridgeConfig) -> str:
    header = (
        f"-- cdc-bridge install for system {config.system!r}, peer {config.peer.name!r}\n"
        "-- Review, then apply in one transaction (psql --single-transaction -f FILE).\n"
    )
    return header + to_text(install_statements(config))


def render_uninstall(config: BridgeConfig) -> str:
    return to_text(uninstall_statements(config))
