"""Retention: prune the bridge's own bookkeeping by age, in bounded transactions.

One list of targets (table, timestamp column, age, extra condition) serves both
`cdc-bridge cleanup` (on demand, synchronous) and the relay daemon (every
`relay.retention_interval_s`, on its own connection, off the shipping path). Each batch
deletes at most `batch_size` rows in its own short transaction (autocommit), so pruning
a large backlog never holds long locks or a long snapshot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from cdc_bridge import sql as queries
from cdc_bridge.config import BridgeConfig, TableSpec

log = logging.getLogger(__name__)

DEFAULT_BATCH = 5000
EVERY_ROW: sql.Composable = sql.SQL("true")


@dataclass(frozen=True)
class PruneTarget:
    """Rows of `table` (in the bridge schema) whose `column` is older than `age`."""

    table: str
    column: str
    age: timedelta
    # Extra condition, e.g. to keep rows still needed (failed batches, open conflicts).
    condition: sql.Composable = field(default_factory=lambda: EVERY_ROW)


def targets(config: BridgeConfig) -> list[PruneTarget]:
    """Everything the bridge prunes: delivery history, audits, snapshots, inbound keys.

    Attempts go before their batches (a batch's attempts would go with it anyway, by
    cascade, but uncounted). A batch or attempt that a change in `failed` names stays:
    `batches show` explains the failure until the change is replayed or skipped.
    Applied idempotency keys go by the sender's watermark (see inbound/apply.py) or, when
    a sender never sends one, by age. The cross-reference of a table that generates its
    own keys keeps a row per record that exists here (or still has a change to ship): it
    grows with the records, not with the changes.
    """
    schema = config.bridge_schema
    age = timedelta(days=config.relay.delivered_retention_days)
    audit_age = timedelta(days=config.relay.audit_retention_days)
    keys_age = timedelta(days=config.inbound.applied_key_retention_days)
    return [
        PruneTarget("delivered", "delivered_at", age),
        PruneTarget("replays", "replayed_at", audit_age),
        PruneTarget("skips", "skipped_at", audit_age),
        PruneTarget("snapshots", "finished_at", audit_age),
        PruneTarget("attempts", "attempted_at", age, _not_failed(schema, "attempts")),
        PruneTarget(
            "batches", "finished_at", age,
            sql.SQL("status <> 'pending' AND {}").format(_not_failed(schema, "batches")),
        ),
        PruneTarget("applied_keys", "applied_at", timedelta(0), _below_watermark(schema)),
        PruneTarget("applied_keys", "applied_at", keys_age),
        PruneTarget("conflicts", "resolved_at", age, sql.SQL("status = 'resolved'")),
        *(
            PruneTarget("entity_xref", "created_at", age, _xref_gone(config, spec))
            for spec in config.table_specs
            if spec.xref is not None
        ),
    ]


def _xref_gone(config: BridgeConfig, spec: TableSpec) -> sql.Composable:
    """Cross-reference rows of records deleted here, once nothing still ships them."""
    schema = config.bridge_schema
    return queries.query(
        "retention_xref_gone",
        entity=sql.Literal(spec.entity),
        label=sql.Literal(spec.label),
        table=spec.name.identifier,
        key=sql.SQL(", ").join(map(sql.Identifier, spec.key)),
        xref=sql.Identifier(schema, "entity_xref"),
        outbox=sql.Identifier(schema, "outbox"),
        failed=sql.Identifier(schema, "failed"),
        system=sql.Literal(config.system),
    )


def _not_failed(schema: str, table: str) -> sql.Composable:
    return queries.query(
        "retention_no_failed_change",
        failed=sql.Identifier(schema, "failed"),
        batch=sql.Identifier(schema, table, "batch_id"),
    )


def _below_watermark(schema: str) -> sql.Composable:
    return queries.query(
        "retention_below_watermark",
        watermarks=sql.Identifier(schema, "watermarks"),
        keys=sql.Identifier(schema, "applied_keys"),
    )


def _statement(name: str, schema: str, item: PruneTarget) -> sql.Composed:
    parts: dict[str, Any] = {
        "target": sql.Identifier(schema, item.table),
        "column": sql.Identifier(item.column),
        "condition": item.condition,
    }
    return queries.query(name, **parts)


def prune(
    conn: psycopg.Connection[Any],
    schema: str,
    items: list[PruneTarget],
    *,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, int]:
    """Rows removed (or, with dry_run, that would be) per table. `conn` is autocommit."""
    counts: dict[str, int] = {}
    for item in items:
        params = {"age": item.age, "limit": batch_size}
        if dry_run:
            row = conn.execute(_statement("retention_prune_count", schema, item), params).fetchone()
            counts[item.table] = counts.get(item.table, 0) + (int(row[0]) if row else 0)
            continue
        statement = _statement("retention_prune_batch", schema, item)
        counts.setdefault(item.table, 0)
        while True:  # one short transaction per batch
            deleted = conn.execute(statement, params).rowcount
            counts[item.table] += deleted
            if deleted < batch_size:
                break
    return counts


@dataclass(frozen=True)
class Vacuumed:
    """What `vacuum` did with the tables it was given."""

    done: list[str]
    # Neither vacuumed by this role nor looked after by autovacuum: the space of the rows
    # retention deletes is never reused, and the table grows (see `warn_left_to_grow`).
    left_to_grow: list[str]


def _vacuumed(rows: list[tuple[Any, ...]]) -> Vacuumed:
    return Vacuumed(
        done=[name for name, may, _auto in rows if may],
        left_to_grow=[name for name, may, auto in rows if not may and not auto],
    )


async def vacuum_async(
    conn: psycopg.AsyncConnection[Any], schema: str, tables: list[str]
) -> Vacuumed:
    """VACUUM those of `tables` this role may (autocommit `conn`)."""
    if not tables:
        return Vacuumed([], [])
    cur = await conn.execute(
        queries.query("retention_vacuumable"), {"schema": schema, "tables": tables}
    )
    vacuumed = _vacuumed(await cur.fetchall())
    for table in vacuumed.done:
        await conn.execute(_vacuum(schema, table))
    return vacuumed


def vacuum(conn: psycopg.Connection[Any], schema: str, tables: list[str]) -> Vacuumed:
    """`vacuum_async` for a blocking connection (autocommit)."""
    rows = conn.execute(
        queries.query("retention_vacuumable"), {"schema": schema, "tables": tables}
    ).fetchall()
    vacuumed = _vacuumed(rows)
    for table in vacuumed.done:
        conn.execute(_vacuum(schema, table))
    return vacuumed


def warn_left_to_grow(schema: str, vacuumed: Vacuumed, warned: set[str]) -> None:
    """Say once (per table, per `warned`) that a pruned table is left to grow."""
    for table in vacuumed.left_to_grow:
        if table in warned:
            continue
        warned.add(table)
        log.warning(
            "retention deletes rows of %s.%s, but this role may not VACUUM it and autovacuum "
            "is off for it: the space of deleted rows is never reused and the table grows. "
            "Fix one of: switch autovacuum on for it (ALTER TABLE %s.%s SET "
            "(autovacuum_enabled = on), or autovacuum = on for the server); VACUUM it "
            "regularly as its owner; on PostgreSQL 17 or later install again, which grants "
            "this role MAINTAIN on it (docs/security.md)",
            schema, table, schema, table,
            extra={"event": "left_to_grow", "table": table},
        )


def _vacuum(schema: str, table: str) -> sql.Composed:
    return queries.query("retention_vacuum", target=sql.Identifier(schema, table))


async def prune_async(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    items: list[PruneTarget],
    *,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, int]:
    """`prune` for the relay's event loop (autocommit connection of its own)."""
    counts: dict[str, int] = {}
    for item in items:
        params = {"age": item.age, "limit": batch_size}
        statement = _statement("retention_prune_batch", schema, item)
        counts.setdefault(item.table, 0)
        while True:
            deleted = (await conn.execute(statement, params)).rowcount
            counts[item.table] += deleted
            if deleted < batch_size:
                break
    return counts
