"""Shared setup for the operations tests: an installed bridge, a config file, the CLI.

The relay is not part of these tests: its bookkeeping (`batches`, `attempts`,
`delivered`, `failed`) is written with plain SQL from changes the real capture triggers
put into the outbox, so ids, txids and per-key order are the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc_bridge.cli import main
from cdc_bridge.config import BridgeConfig
from tests.helpers import FIXTURES, SECRET, example_config, install


@dataclass
class Bridge:
    dsn: str
    config: BridgeConfig
    config_path: Path
    capsys: pytest.CaptureFixture[str]

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def cli(self, *args: str) -> tuple[int, str, str]:
        """Run `cdc-bridge -c CONFIG ARGS...` in-process: (exit code, stdout, stderr)."""
        self.capsys.readouterr()
        try:
            main(["-c", str(self.config_path), *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return conn.execute(query, params or None).fetchall()


def write_config(dsn: str, directory: Path) -> Path:
    text = (FIXTURES / "erp.yaml").read_text()
    text = text.replace("${ERP_DATABASE_URL}", dsn).replace("${BRIDGE_SECRET}", SECRET)
    path = directory / "erp.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def bridge(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Bridge:
    config = example_config(db)
    install(config)
    return Bridge(db, config, write_config(db, tmp_path), capsys)


def outbox_ids(bridge: Bridge) -> list[int]:
    return [r[0] for r in bridge.rows("SELECT id FROM cdc_bridge.outbox ORDER BY id")]


def settle(
    bridge: Bridge,
    batch_id: str,
    ids: list[int],
    *,
    failed: bool = False,
    http_status: int = 200,
    body: str = '{"results": []}',
    result: str = "applied",
    delivered_at: datetime | None = None,
) -> None:
    """What the relay records after the peer answered: the batch, one attempt, and the
    changes moved from the outbox to `delivered` (or `failed`, with the peer's reason)."""
    status = "failed" if failed else "delivered"
    with bridge.connect() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO cdc_bridge.batches (batch_id, status, change_count, first_id, last_id,"
            " created_at, finished_at) VALUES (%s, %s, %s, %s, %s, now(), now())",
            (batch_id, status, len(ids), min(ids), max(ids)),
        )
        conn.execute(
            "INSERT INTO cdc_bridge.attempts (batch_id, http_status, response_body, duration_ms)"
            " VALUES (%s, %s, %s, 12.5)",
            (batch_id, http_status, body),
        )
        columns = "id, txid, table_name, op, key, fields, old, changed, origin, captured_at"
        if failed:
            conn.execute(
                f"WITH gone AS (DELETE FROM cdc_bridge.outbox WHERE id = ANY(%s) RETURNING *) "  # noqa: S608
                f"INSERT INTO cdc_bridge.failed ({columns}, batch_id, http_status, reason,"
                f" response_body) SELECT {columns}, %s, %s, %s, %s FROM gone",
                (ids, batch_id, http_status, "rejected: " + body, body),
            )
        else:
            conn.execute(
                f"WITH gone AS (DELETE FROM cdc_bridge.outbox WHERE id = ANY(%s) RETURNING *) "  # noqa: S608
                f"INSERT INTO cdc_bridge.delivered ({columns}, batch_id, result, delivered_at)"
                f" SELECT {columns}, %s, %s, coalesce(%s, now()) FROM gone",
                (ids, batch_id, result, delivered_at),
            )
