"""Capture overhead: pgbench with the bridge's triggers against a no-trigger baseline.

Run:  .venv/bin/python bench/capture.py [--quick] [--seconds N] [--dsn postgresql://...]

Without --dsn it starts an embedded PostgreSQL 18 with fsync on. Three databases get
the same 100k-row table: `plain` (no triggers), `capture` (the rendered install) and
`statement` (a statement-level transition-table trigger written for the bulk case).
Every pgbench run alternates plain and capture, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdc_bridge.capture.render import install_base, render_install, to_text
from cdc_bridge.config import parse_config
from cdc_bridge.embedded import EmbeddedPostgres, _wheel_install_dir

HERE = Path(__file__).resolve().parent / "capture_sql"
SCRIPTS = ("update", "insert", "mixed")
CLIENTS = (1, 8)
VARIANTS = ("plain", "capture", "statement")
_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")


def read(name: str) -> str:
    return (HERE / name).read_text()


def pgbench() -> str:
    return str(_wheel_install_dir() / "bin" / "pgbench")


@contextmanager
def server(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with EmbeddedPostgres(fsync=True, settings={"shared_buffers": "256MB"}) as pg:
        yield pg.dsn


def prepare(admin_dsn: str, prefix: str) -> dict[str, str]:
    dsns = {}
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for variant in VARIANTS:
            name = f"{prefix}_{variant}"
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            dsns[variant] = make_conninfo(admin_dsn, dbname=name)
    for variant, dsn in dsns.items():
        config = parse_config(read("bench.yaml"), "bench.yaml", {"BENCH_DATABASE_URL": dsn})
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(read("schema.sql"))
            if variant == "capture":
                conn.execute(render_install(config))
            if variant == "statement":
                conn.execute(to_text(install_base(config)))
                conn.execute(read("statement_trigger.sql"))
    return dsns


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(read("reset.sql"))
        if conn.execute("SELECT to_regclass('cdc_bridge.outbox')").fetchone() != (None,):
            conn.execute("TRUNCATE cdc_bridge.outbox")
        conn.execute("VACUUM ANALYZE public.items")
        conn.execute("CHECKPOINT")


def run_pgbench(dsn: str, script: str, clients: int, seconds: int) -> float:
    reset(dsn)
    args = [pgbench(), "-n", "-c", str(clients), "-j", str(clients), "-T", str(seconds)]
    args += ["-f", str(HERE / f"{script}.pgbench"), dsn]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    match = _TPS.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"pgbench failed: {done.stderr.strip()[-500:]}")
    return float(match.group(1))


def bulk_update_seconds(dsn: str, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        reset(dsn)
        with psycopg.connect(dsn) as conn:
            started = time.perf_counter()
            conn.execute(read("bulk_update.sql"))
            conn.commit()
            timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing server (its admin database); default embedded")
    parser.add_argument("--seconds", type=int, default=10, help="length of each pgbench run")
    parser.add_argument("--quick", action="store_true", help="3 s runs, one bulk repeat")
    args = parser.parse_args()
    seconds = 3 if args.quick else args.seconds
    repeats = 1 if args.quick else 3
    with server(args.dsn) as admin:
        dsns = prepare(admin, "cdcb_bench")
        print(f"pgbench {seconds} s per run; single-row workloads, tps")
        print(f"{'workload':<10}{'clients':>8}{'no trigger':>12}{'capture':>10}{'ratio':>8}")
        for script in SCRIPTS:
            for clients in CLIENTS:
                plain = run_pgbench(dsns["plain"], script, clients, seconds)
                capture = run_pgbench(dsns["capture"], script, clients, seconds)
                ratio = capture / plain
                print(f"{script:<10}{clients:>8}{plain:>12.0f}{capture:>10.0f}{ratio:>8.2f}")
        print("\n100k-row UPDATE in one statement, seconds (median)")
        plain_s = bulk_update_seconds(dsns["plain"], repeats)
        print(f"{'no trigger':<28}{plain_s:>8.2f}   1.00x")
        variants = (("capture", "row-level (capture_v1)"), ("statement", "statement-level"))
        for variant, label in variants:
            took = bulk_update_seconds(dsns[variant], repeats)
            print(f"{label:<28}{took:>8.2f}{took / plain_s:>7.2f}x")


if __name__ == "__main__":
    main()
