"""Conflicts a person settles: list, show, resolve (`cdc-bridge conflicts ...`).

Resolving sets the chosen value locally with the origin set to the peer, so the capture
trigger marks it as an echo instead of shipping it with a stale `old`. The resolution is
then queued in the outbox as an update whose `old` is the peer's value: the peer finds
its current value equal to `old`, applies the chosen value without a new conflict, and
closes its own open conflict on that field. Both sides end with the same value.
"""

from __future__ import annotations

from typing import Any, Literal

from psycopg import sql

from cdc_bridge import outbox
from cdc_bridge import sql as queries
from cdc_bridge.config import BridgeConfig
from cdc_bridge.db import connection, dict_cursor
from cdc_bridge.errors import CodecError, NoSuchConflict, UserError
from cdc_bridge.peer import codec

Take = Literal["local", "peer", "value"]


def list_conflicts(config: BridgeConfig, status: str | None = None) -> list[dict[str, Any]]:
    with connection(config.database.url.get_secret_value()) as conn, dict_cursor(conn) as cur:
        codec.use_exact_json(conn)
        cur.execute(
            queries.query("inbound_list_conflicts", schema=config.bridge_schema),
            {"status": status},
        )
        return cur.fetchall()


def get_conflict(config: BridgeConfig, conflict_id: int) -> dict[str, Any]:
    with connection(config.database.url.get_secret_value()) as conn:
        codec.use_exact_json(conn)
        return _locked(conn, config, conflict_id)


def _locked(conn: Any, config: BridgeConfig, conflict_id: int) -> dict[str, Any]:
    with dict_cursor(conn) as cur:
        cur.execute(
            queries.query("inbound_get_conflict", schema=config.bridge_schema),
            {"id": conflict_id},
        )
        row = cur.fetchone()
    if row is None:
        raise NoSuchConflict(
            f"no conflict with id {conflict_id}; fix: pick one from `cdc-bridge conflicts list`"
        )
    return row


def parse_value(text: str) -> Any:
    """`--value` is read as JSON (42, null, "x"); anything else is taken as plain text."""
    try:
        return codec.loads(text)
    except CodecError:
        return text


def resolve_conflict(
    config: BridgeConfig, conflict_id: int, take: Take, value: Any = None
) -> dict[str, Any]:
    """Set the chosen value here, queue it for the peer, close the conflict; returns it."""
    with connection(config.database.url.get_secret_value()) as conn, conn.transaction():
        codec.use_exact_json(conn)
        conflict = _locked(conn, config, conflict_id)
        if conflict["status"] != "open":
            raise UserError(
                f"conflict {conflict_id} is already resolved "
                f"(by {conflict['resolved_by']}); nothing to do"
            )
        spec = config.table(conflict["table_name"])
        if take == "local":
            value = conflict["local_value"]
        elif take == "peer":
            value = conflict["peer_value"]
        name = conflict["field"]
        key = conflict["key"]
        conn.execute(queries.query("inbound_set_origin"), {"origin": config.peer.name})
        updated = conn.execute(
            queries.query(
                "inbound_set_field",
                table=spec.name.identifier,
                field=name,
                key=_columns(spec.key),
            ),
            {"values": _json({**key, name: value})},
        )
        if updated.rowcount == 0:
            raise UserError(
                f"{spec.label} row {_json(key)} no longer exists here; nothing to resolve"
            )
        conn.execute(
            queries.query(
                "inbound_ship_resolution",
                schema=config.bridge_schema,
                queue=outbox.queue_into(config.bridge_schema),
            ),
            {
                "table": spec.label,
                "key": _json(key),
                "fields": _json({**key, name: value}),
                "old": _json({name: conflict["peer_value"]}),
                "field": name,
                "origin": config.system,
            },
        )
        conn.execute(
            queries.query("inbound_close_conflict", schema=config.bridge_schema),
            {"id": conflict_id, "resolved_by": "local", "winner": take, "value": _json(value)},
        )
    return {**conflict, "status": "resolved", "winner": take, "resolution": value}


def _columns(names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _json(value: Any) -> str:
    return codec.dumps_text(value)
