"""Snapshot throughput: rows/s into the outbox, against a bare INSERT ... SELECT of the same rows.

Usage:
    .venv/bin/python bench/snapshot/run.py [--rows 100000] [--repeat 3]

Uses $CDC_BRIDGE_BENCH_DSN (a server where it may create and drop a database), or an
embedded PostgreSQL. Prints the median of each variant and its ratio to the baseline,
all measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from bench.common import bench_database, server
from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config
from cdc_bridge.ops.common import Target
from cdc_bridge.ops.snapshot import snapshot

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
BASELINE = (
    "INSERT INTO cdc_bridge.outbox (table_name, op, key, fields, origin) "
    "SELECT 'public.customers', 'U', jsonb_build_object('id', c.id), to_jsonb(c), 'erp' "
    "FROM public.customers AS c ORDER BY c.id"
)


def prepare(dsn: str, rows: int) -> Target:
    text = (FIXTURES / "erp.yaml").read_text()
    config = parse_config(text, "erp.yaml", {"ERP_DATABASE_URL": dsn, "BRIDGE_SECRET": "bench"})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((FIXTURES / "schema.sql").read_text())
        conn.execute(render_install(config))
        conn.execute(
            "INSERT INTO customers SELECT i, 'customer ' || i, i || '@example.com', 'gold' "
            "FROM generate_series(1, %s) AS i",
            (rows,),
        )
        conn.execute("TRUNCATE cdc_bridge.outbox")
        conn.execute("VACUUM ANALYZE customers")
    return Target.of(config)


def timed(dsn: str, run: Callable[[], object]) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE cdc_bridge.outbox")
        conn.execute("CHECKPOINT")
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with server() as admin, bench_database(admin, "snapshot") as dsn:
        target = prepare(dsn, args.rows)
        spec = parse_config(
            (FIXTURES / "erp.yaml").read_text(),
            "erp.yaml",
            {"ERP_DATABASE_URL": dsn, "BRIDGE_SECRET": "bench"},
        ).table("public.customers")

        def baseline() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(BASELINE)

        variants: dict[str, Callable[[], object]] = {"bare INSERT ... SELECT": baseline}
        for chunk in (1000, 5000, 20000):
            variants[f"snapshot --chunk {chunk}"] = lambda c=chunk: snapshot(target, spec, chunk=c)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):  # interleaved, so load from other work hits all alike
            for name, run in variants.items():
                times[name].append(timed(dsn, run))
    base = args.rows / statistics.median(times["bare INSERT ... SELECT"])
    print(f"{args.rows} rows, median of {args.repeat} runs")
    print(f"{'variant':28} {'rows/s':>10} {'vs bare':>8}")
    for name, seconds in times.items():
        rate = args.rows / statistics.median(seconds)
        print(f"{name:28} {rate:10,.0f} {rate / base:8.2f}")


if __name__ == "__main__":
    main()
