"""What the relay's /healthz and /metrics cost the database: the oldest-pending probe.

Usage:
    .venv/bin/python bench/health_probe/run.py [--backlog 1000000] [--delivered 200000]

Fills the outbox with a backlog of --backlog changes, deletes the first --delivered of
them as the relay does when the peer acknowledges them (dead rows at the head of the
primary key until VACUUM), and times the probe each scrape runs (`relay_oldest_pending`),
against the baseline a naive probe would pay in the same run: min(captured_at) over the
whole outbox. Both are timed before and after VACUUM, 20 runs each, median and max.

Uses $CDC_BRIDGE_BENCH_DSN (a server where it may create and drop a database), or an
embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import bench_database, server
from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config
from cdc_bridge.sql import query

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
RUNS = 20

FILL = """
INSERT INTO cdc_bridge.outbox (table_name, op, key, fields, origin)
SELECT 'public.customers', 'I', jsonb_build_object('id', i),
       jsonb_build_object('id', i, 'name', 'customer ' || i, 'email', NULL, 'tier', 'gold'),
       'erp'
FROM generate_series(1, %s) AS i
"""
NAIVE = sql.SQL("SELECT min(captured_at) FROM cdc_bridge.outbox")


def timed(conn: psycopg.Connection[Any], statement: sql.Composed | sql.SQL) -> tuple[float, float]:
    """(median, max) milliseconds of RUNS executions, after one warm-up."""
    conn.execute(statement).fetchone()
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        conn.execute(statement).fetchone()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--delivered", type=int, default=200_000)
    args = parser.parse_args()
    with (
        server() as admin,
        bench_database(admin, "health") as dsn,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        conn.execute((FIXTURES / "schema.sql").read_text())
        text = (FIXTURES / "erp.yaml").read_text()
        config = parse_config(text, "erp.yaml", {"ERP_DATABASE_URL": dsn, "BRIDGE_SECRET": "x"})
        conn.execute(render_install(config))
        conn.execute(FILL, (args.backlog,))
        conn.execute("DELETE FROM cdc_bridge.outbox WHERE id <= %s", (args.delivered,))
        conn.execute("ANALYZE cdc_bridge.outbox")
        probe = query("relay_oldest_pending", schema="cdc_bridge")
        pending = args.backlog - args.delivered
        for moment in ("before VACUUM", "after VACUUM"):
            if moment == "after VACUUM":
                conn.execute("VACUUM ANALYZE cdc_bridge.outbox")
            for label, statement in (("probe", probe), ("min(captured_at)", NAIVE)):
                median, worst = timed(conn, statement)
                print(
                    f"{pending} pending, {args.delivered} delivered {moment}: "
                    f"{label:<17} median {median:8.3f} ms, max {worst:8.3f} ms"
                )


if __name__ == "__main__":
    main()
