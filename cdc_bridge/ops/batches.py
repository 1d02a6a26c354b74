"""`batches list` and `batches show`: what was sent, what the peer answered, what is parked."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdc_bridge import sql as queries
from cdc_bridge.config import BridgeConfig
from cdc_bridge.db import dict_cursor
from cdc_bridge.entity import Entities
from cdc_bridge.errors import UserError
from cdc_bridge.ops.common import Target

BATCH_STATUSES = ("pending", "delivered", "failed")


@dataclass
class BatchDetail:
    batch: dict[str, Any]
    changes: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**self.batch, "changes": self.changes, "attempts": self.attempts}


def list_batches(
    target: Target,
    *,
    status: str | None = None,
    table: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    params = {"status": status, "table": table, "since": since, "limit": limit}
    with target.connect() as conn, dict_cursor(conn) as cur:
        cur.execute(queries.query("ops_list_batches", schema=target.schema), params)
        return cur.fetchall()


def show_batch(
    target: Target, batch_id: str, config: BridgeConfig | None = None
) -> BatchDetail:
    with target.connect() as conn, dict_cursor(conn) as cur:
        cur.execute(queries.query("ops_get_batch", schema=target.schema), {"batch_id": batch_id})
        batch = cur.fetchone()
        if batch is None:
            raise UserError(
                f"no batch {batch_id!r}; fix: pick an id from `cdc-bridge batches list`"
            )
        detail = BatchDetail(batch)
        cur.execute(
            queries.query("ops_batch_changes", schema=target.schema),
            {
                "batch_id": batch_id,
                "pending": batch["status"] == "pending",
                "first_id": batch["first_id"],
                "last_id": batch["last_id"],
            },
        )
        detail.changes = cur.fetchall()
        _add_parked_counts(cur, target, detail.changes)
        cur.execute(
            queries.query("ops_batch_attempts", schema=target.schema), {"batch_id": batch_id}
        )
        detail.attempts = cur.fetchall()
    if config is not None:
        _add_entity_fields(config, detail.changes)
    return detail


def _add_entity_fields(config: BridgeConfig, changes: list[dict[str, Any]]) -> None:
    """Each change of a mapped table with its entity, and each of its fields with the
    local column it came from (`entity_fields`: field, column, this side's value)."""
    entities = Entities(config)
    for change in changes:
        emap = entities.of_table(change["table_name"])
        if emap is None or not emap.spec.mapped:
            continue
        change["entity"] = emap.entity
        values = change.get("fields") or change.get("key") or {}
        change["entity_fields"] = [
            {"field": f.name, "column": f.column, "value": values[f.column]}
            for f in emap.fields
            if f.column in values
        ]


def _add_parked_counts(cur: Any, target: Target, changes: list[dict[str, Any]]) -> None:
    """A failed change blocks its key: count the outbox rows waiting behind it."""
    failed_ids = [c["id"] for c in changes if c["state"] == "failed"]
    parked: dict[int, int] = {}
    if failed_ids:
        cur.execute(queries.query("ops_parked_behind", schema=target.schema), {"ids": failed_ids})
        parked = {row["id"]: row["parked"] for row in cur.fetchall()}
    for change in changes:
        is_failed = change["state"] == "failed"
        change["blocks_key"] = change["key"] if is_failed else None
        change["parked_behind"] = parked.get(change["id"], 0) if is_failed else 0
