"""Retention: prune old bookkeeping in bounded transactions.

`prune` takes any list of (table, timestamp column, age), so other stages (applied
idempotency keys, resolved conflicts) add their tables to the same run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from psycopg import sql

from cdc_bridge import sql as queries
from cdc_bridge.config import BridgeConfig
from cdc_bridge.ops.common import Target

DEFAULT_BATCH = 5000
EVERY_ROW: sql.Composable = sql.SQL("true")


@dataclass(frozen=True)
class PruneTarget:
    """Rows of `table` (in the bridge schema) whose `column` is older than `age`."""

    table: str
    column: str
    age: timedelta
    # Extra condition, e.g. to keep rows still needed (failed batches).
    condition: sql.Composable = field(default_factory=lambda: EVERY_ROW)


def bridge_targets(config: BridgeConfig) -> list[PruneTarget]:
    """What this stage prunes: delivered history, audits, finished snapshots, done batches."""
    age = timedelta(days=config.relay.delivered_retention_days)
    return [
        PruneTarget("delivered", "delivered_at", age),
        PruneTarget("replays", "replayed_at", age),
        PruneTarget("skips", "skipped_at", age),
        PruneTarget("snapshots", "finished_at", age),
        PruneTarget("batches", "finished_at", age, sql.SQL("status = 'delivered'")),
    ]


def prune(
    target: Target,
    targets: list[PruneTarget],
    *,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, int]:
    """Rows removed (or, with dry_run, that would be) per table."""
    counts: dict[str, int] = {}
    with target.connect(autocommit=True) as conn:
        for item in targets:
            parts: dict[str, Any] = {
                "target": sql.Identifier(target.schema, item.table),
                "column": sql.Identifier(item.column),
                "condition": item.condition,
            }
            params = {"age": item.age, "limit": batch_size}
            if dry_run:
                row = conn.execute(queries.query("ops_prune_count", **parts), params).fetchone()
                counts[item.table] = int(row[0]) if row else 0
                continue
            counts[item.table] = 0
            while True:  # one short transaction per batch (autocommit)
                deleted = conn.execute(queries.query("ops_prune_batch", **parts), params).rowcount
                counts[item.table] += deleted
                if deleted < batch_size:
                    break
    return counts


def cleanup(config: BridgeConfig, *, dry_run: bool = False) -> dict[str, int]:
    return prune(Target.of(config), bridge_targets(config), dry_run=dry_run)
