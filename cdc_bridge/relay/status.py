"""`cdc-bridge status`: how far behind the relay is, and whether it is healthy.

Healthy means: no failed change waits for an operator, no pending change is older than
`relay.lag_threshold_s`, and if changes are pending, a relay holds the lock to ship them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from cdc_bridge.config import BridgeConfig
from cdc_bridge.db import connection, dict_cursor
from cdc_bridge.relay.daemon import lock_name
from cdc_bridge.sql import query


@dataclass(frozen=True)
class TableStatus:
    table: str
    pending: int
    oldest_pending_s: float | None
    last_delivery: datetime | None
    failed: int


@dataclass
class RelayStatus:
    tables: list[TableStatus]
    lag_threshold_s: float
    lock_holder: dict[str, Any] | None  # the relay that ships now; None: no relay running
    oldest_open_transaction: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        return data


def relay_status(config: BridgeConfig) -> RelayStatus:
    schema = config.bridge_schema
    labels = [spec.label for spec in config.table_specs]
    with connection(config.database.url.get_secret_value()) as conn, dict_cursor(conn) as cur:
        cur.execute(query("relay_status_tables", schema=schema), {"tables": labels})
        tables = [TableStatus(**_floats(row)) for row in cur.fetchall()]
        cur.execute(query("relay_lock_holder"), {"lock_name": lock_name(config)})
        holder = cur.fetchone()
        cur.execute(query("relay_oldest_transaction"))
        oldest = cur.fetchone()
    status = RelayStatus(
        tables=tables,
        lag_threshold_s=config.relay.lag_threshold_s,
        lock_holder=holder,
        oldest_open_transaction=_floats(oldest) if oldest else None,
    )
    status.problems = _problems(status)
    return status


def _floats(row: dict[str, Any]) -> dict[str, Any]:
    # extract(epoch ...) arrives as Decimal: seconds read better as floats.
    return {k: float(v) if k.endswith("_s") and v is not None else v for k, v in row.items()}


def _problems(status: RelayStatus) -> list[str]:
    problems = []
    for table in status.tables:
        if table.failed:
            problems.append(
                f"{table.table}: {table.failed} failed change(s) wait for replay or skip"
            )
        if table.oldest_pending_s is not None and table.oldest_pending_s > status.lag_threshold_s:
            problems.append(
                f"{table.table}: oldest pending change is {table.oldest_pending_s:.0f}s old "
                f"(threshold {status.lag_threshold_s:.0f}s)"
            )
    pending = sum(table.pending for table in status.tables)
    if pending and status.lock_holder is None:
        problems.append(
            f"{pending} change(s) pending and no relay holds the lock; "
            "fix: start `cdc-bridge run` for this config"
        )
    return problems
