"""Capture overhead: pgbench with the bridge's triggers against a no-trigger baseline.

Run:  .venv/bin/python bench/capture.py [--quick] [--seconds N] [--no-fsync] [--dsn URL]

Without --dsn it starts an embedded PostgreSQL 18 with fsync on. Five databases get
the same 100k-row table: `plain` (no triggers), `capture` (the rendered install),
`relay_busy` (the same install as writers see it while a relay is shipping: the relay
has said it is not listening, so no NOTIFY is sent), `invoker` (as `relay_busy`, with
`database.capture_security: invoker`) and `statement` (a statement-level
transition-table trigger written for the bulk case only). Each round runs every variant
back to back, so all see the same machine load; the tps reported is the median over the rounds.
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
VARIANTS = ("plain", "capture", "relay_busy", "invoker", "statement")
PGBENCH_VARIANTS = ("plain", "capture", "relay_busy", "invoker")
_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")


def read(name: str) -> str:
    return (HERE / name).read_text()


def pgbench() -> str:
    return str(_wheel_install_dir() / "bin" / "pgbench")


@contextmanager
def server(dsn: str | None, fsync: bool) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with EmbeddedPostgres(fsync=fsync, settings={"shared_buffers": "256MB"}) as pg:
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
        security = "invoker" if variant == "invoker" else "definer"
        env = {"BENCH_DATABASE_URL": dsn, "BENCH_CAPTURE_SECURITY": security}
        config = parse_config(read("bench.yaml"), "bench.yaml", env)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(read("schema.sql"))
            if variant in ("capture", "relay_busy", "invoker"):
                conn.execute(render_install(config))
            if variant in ("relay_busy", "invoker"):
                conn.execute(read("relay_busy.sql"))
            if variant == "statement":
                conn.execute(to_text(install_base(config)))
                conn.execute(read("statement_trigger.sql"))
    return dsns


def drop_databases(admin_dsn: str, dsns: dict[str, str]) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for dsn in dsns.values():
            name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(str(name))))


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


def bulk_update_seconds(dsn: str) -> float:
    reset(dsn)
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        conn.execute(read("bulk_update.sql"))
        conn.commit()
        return time.perf_counter() - started


def single_row_table(dsns: dict[str, str], seconds: int, rounds: int) -> None:
    print(f"pgbench, {seconds} s per run, median of {rounds} round(s); tps and ratio to no trigger")
    header = f"{'workload':<9}{'clients':>8}{'no trigger':>12}{'capture':>9}{'ratio':>7}"
    print(header + f"{'capture, relay busy':>20}{'ratio':>7}{'same, invoker':>14}{'ratio':>7}")
    for script in SCRIPTS:
        for clients in CLIENTS:
            tps: dict[str, list[float]] = {v: [] for v in PGBENCH_VARIANTS}
            for _ in range(rounds):
                for variant in PGBENCH_VARIANTS:
                    tps[variant].append(run_pgbench(dsns[variant], script, clients, seconds))
            plain, capture, quiet, invoker = (
                statistics.median(tps[v]) for v in PGBENCH_VARIANTS
            )
            print(
                f"{script:<9}{clients:>8}{plain:>12.0f}{capture:>9.0f}{capture / plain:>7.2f}"
                f"{quiet:>20.0f}{quiet / plain:>7.2f}{invoker:>14.0f}{invoker / plain:>7.2f}"
            )


def bulk_table(dsns: dict[str, str], rounds: int) -> None:
    print(f"\n100k-row UPDATE in one statement, seconds, median of {rounds}")
    labels = {
        "plain": "no trigger",
        "capture": "row-level (generated capture function)",
        "statement": "statement-level (transition tables)",
    }
    took: dict[str, list[float]] = {v: [] for v in labels}
    for _ in range(rounds):
        for variant in labels:
            took[variant].append(bulk_update_seconds(dsns[variant]))
    base = statistics.median(took["plain"])
    for variant, label in labels.items():
        median = statistics.median(took[variant])
        print(f"{label:<38}{median:>7.2f}{median / base:>8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing server (its admin database); default embedded")
    parser.add_argument("--seconds", type=int, default=10, help="length of each pgbench run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement")
    parser.add_argument("--quick", action="store_true", help="3 s runs, one round")
    parser.add_argument("--no-fsync", action="store_true", help="embedded server with fsync off")
    args = parser.parse_args()
    seconds, rounds = (3, 1) if args.quick else (args.seconds, args.rounds)
    with server(args.dsn, fsync=not args.no_fsync) as admin:
        dsns = prepare(admin, "cdcb_bench")
        try:
            with psycopg.connect(admin) as conn:
                row = conn.execute("SELECT version(), current_setting('fsync')").fetchone()
            print(f"{row[0].split(' on ')[0]}, fsync {row[1]}" if row else "")
            single_row_table(dsns, seconds, rounds)
            bulk_table(dsns, rounds)
        finally:
            drop_databases(admin, dsns)


if __name__ == "__main__":
    main()
