"""Capture overhead: pgbench with the bridge's triggers against a no-trigger baseline.

Run:  .venv/bin/python bench/capture.py [--quick] [--seconds N] [--rounds N] [--no-fsync]
          [--dsn URL] [--workloads update,insert,mixed] [--variants plain,capture,...]

Without --dsn it starts an embedded PostgreSQL 18 with fsync on. Each variant gets a
database with the same 100k-row table: `plain` (no triggers), `capture` (the rendered
install), `relay_busy` (the same install as writers see it while a relay is shipping: the
relay has said it is not listening, so no NOTIFY is sent), `per_field` (as `relay_busy`,
the table configured field by field, `bench_fields.yaml`: its capture names the columns)
and `statement` (a
statement-level transition-table trigger written for the bulk case only). Three floors, none
of them a working capture, show what any row-trigger design pays: `noop_trigger` (as
`relay_busy`, the capture row triggers calling a PL/pgSQL function that only returns),
`constant_row` (the same function inserting one constant outbox row) and `c_trigger` (update
workload only: one C-language BEFORE UPDATE row trigger, PostgreSQL's
suppress_redundant_updates_trigger()). Each round runs every variant back to back, so all
see the same machine load; the tps reported is the median over the rounds. The floors get a
second table. The bulk table (one 100k-row UPDATE) runs with the update workload. `plain`
always runs: every ratio is to it.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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
VARIANTS = (
    "plain",
    "capture",
    "relay_busy",
    "per_field",
    "statement",
    "noop_trigger",
    "constant_row",
    "c_trigger",
)
# Variants that get the rendered install, then these files (after schema.sql), in order.
INSTALLED = (
    "capture",
    "relay_busy",
    "per_field",
    "noop_trigger",
    "constant_row",
    "c_trigger",
)
# The bridge config each installed variant renders (default bench.yaml: a whole-row table).
CONFIG_FILE = {"per_field": "bench_fields.yaml"}
SETUP_SQL: dict[str, tuple[str, ...]] = {
    "relay_busy": ("relay_busy.sql",),
    "per_field": ("relay_busy.sql",),
    "statement": ("statement_trigger.sql",),
    "noop_trigger": ("relay_busy.sql", "noop_trigger.sql", "floor_triggers.sql"),
    "constant_row": ("relay_busy.sql", "constant_row.sql", "floor_triggers.sql"),
    "c_trigger": ("relay_busy.sql", "c_trigger.sql"),
}
# The pgbench workloads each variant runs (`statement` is for the bulk table only).
PGBENCH_WORKLOADS: dict[str, tuple[str, ...]] = {
    "plain": SCRIPTS,
    "capture": SCRIPTS,
    "relay_busy": SCRIPTS,
    "per_field": SCRIPTS,
    "noop_trigger": SCRIPTS,
    "constant_row": SCRIPTS,
    "c_trigger": ("update",),
}
BULK_LABELS = {
    "plain": "no trigger",
    "capture": "row-level (generated capture function)",
    "statement": "statement-level (transition tables)",
}
# (variant, column label) of each pgbench table, after the no-trigger column.
CAPTURE_COLUMNS = (
    ("capture", "capture"),
    ("relay_busy", "capture, relay busy"),
    ("per_field", "per-field, busy"),
)
FLOOR_COLUMNS = (
    ("relay_busy", "capture, relay busy"),
    ("noop_trigger", "no-op trigger"),
    ("constant_row", "constant row"),
    ("c_trigger", "C trigger"),
)
FLOOR_LEGEND = {
    "noop_trigger": "capture row triggers call a PL/pgSQL function that only returns: "
    "what any PL/pgSQL trigger costs",
    "constant_row": "as no-op, the function inserts one constant outbox row: PL/pgSQL + one "
    "outbox row, no data work",
    "c_trigger": "update only: one BEFORE UPDATE row trigger, built-in C function "
    "suppress_redundant_updates_trigger()",
}
_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")

Medians = dict[tuple[str, int], dict[str, float]]


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


def needed_variants(selected: tuple[str, ...], workloads: tuple[str, ...]) -> tuple[str, ...]:
    """The selected variants the chosen workloads use, with `plain` always in."""
    used = {v for v in selected if set(PGBENCH_WORKLOADS.get(v, ())) & set(workloads)}
    if runs_bulk(selected, workloads):
        used |= set(BULK_LABELS) & set(selected)
    return tuple(v for v in VARIANTS if v == "plain" or v in used)


def runs_bulk(variants: tuple[str, ...], workloads: tuple[str, ...]) -> bool:
    return "update" in workloads and any(v in variants for v in ("capture", "statement"))


def prepare(admin_dsn: str, prefix: str, variants: tuple[str, ...]) -> dict[str, str]:
    dsns = {}
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for variant in variants:
            name = f"{prefix}_{variant}"
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            dsns[variant] = make_conninfo(admin_dsn, dbname=name)
    for variant, dsn in dsns.items():
        install(dsn, variant)
    return dsns


def install(dsn: str, variant: str) -> None:
    env = {"BENCH_DATABASE_URL": dsn}
    config_file = CONFIG_FILE.get(variant, "bench.yaml")
    config = parse_config(read(config_file), config_file, env)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(read("schema.sql"))
        if variant in INSTALLED:
            conn.execute(render_install(config))
        if variant == "statement":
            conn.execute(to_text(install_base(config)))
        for name in SETUP_SQL.get(variant, ()):
            conn.execute(read(name))


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


def measure(
    dsns: dict[str, str], script: str, clients: int, seconds: int, rounds: int
) -> dict[str, float]:
    """Median tps of every variant that runs this workload, back to back in each round."""
    variants = [v for v in dsns if script in PGBENCH_WORKLOADS.get(v, ())]
    tps: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            tps[variant].append(run_pgbench(dsns[variant], script, clients, seconds))
    return {v: statistics.median(runs) for v, runs in tps.items()}


def shown(columns: tuple[tuple[str, str], ...], dsns: dict[str, str]) -> list[tuple[str, str]]:
    return [(variant, label) for variant, label in columns if variant in dsns]


def width(label: str) -> int:
    return max(len(label) + 1, 9)


def header(columns: list[tuple[str, str]]) -> str:
    cells = "".join(f"{label:>{width(label)}}{'ratio':>7}" for _, label in columns)
    return f"{'workload':<9}{'clients':>8}{'no trigger':>12}{cells}"


def row(script: str, clients: int, tps: dict[str, float], columns: list[tuple[str, str]]) -> str:
    """One table line; `-` where the variant does not run this workload."""
    plain = tps["plain"]
    line = f"{script:<9}{clients:>8}{plain:>12.0f}"
    for variant, label in columns:
        if variant in tps:
            line += f"{tps[variant]:>{width(label)}.0f}{tps[variant] / plain:>7.2f}"
        else:
            line += f"{'-':>{width(label)}}{'-':>7}"
    return line


def capture_table(
    dsns: dict[str, str], workloads: tuple[str, ...], seconds: int, rounds: int
) -> Medians:
    """Measures every pgbench variant; prints the capture table a line at a time."""
    columns = shown(CAPTURE_COLUMNS, dsns)
    print(f"pgbench, {seconds} s per run, median of {rounds} round(s); tps and ratio to no trigger")
    print(header(columns))
    medians: Medians = {}
    for script in workloads:
        for clients in CLIENTS:
            medians[script, clients] = measure(dsns, script, clients, seconds, rounds)
            print(row(script, clients, medians[script, clients], columns))
    return medians


def floors_table(dsns: dict[str, str], medians: Medians) -> None:
    """The floors, measured in the same rounds as the capture table."""
    columns = shown(FLOOR_COLUMNS, dsns)
    if not any(variant in FLOOR_LEGEND for variant, _ in columns):
        return
    print("\nfloors (not working captures): the relay-busy install, capture row triggers replaced")
    print(header(columns))
    for (script, clients), tps in medians.items():
        print(row(script, clients, tps, columns))
    for variant, label in columns:
        if variant in FLOOR_LEGEND:
            print(f"  {label:<15}{FLOOR_LEGEND[variant]}")


def bulk_table(dsns: dict[str, str], rounds: int) -> None:
    print(f"\n100k-row UPDATE in one statement, seconds, median of {rounds}")
    labels = {v: label for v, label in BULK_LABELS.items() if v in dsns}
    took: dict[str, list[float]] = {v: [] for v in labels}
    for _ in range(rounds):
        for variant in labels:
            took[variant].append(bulk_update_seconds(dsns[variant]))
    base = statistics.median(took["plain"])
    for variant, label in labels.items():
        median = statistics.median(took[variant])
        print(f"{label:<38}{median:>7.2f}{median / base:>8.2f}x")


def name_list(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: comma-separated names out of `allowed`, kept in its order."""

    def parse(text: str) -> tuple[str, ...]:
        names = {name.strip() for name in text.split(",") if name.strip()}
        if not names or names - set(allowed):
            raise argparse.ArgumentTypeError(f"comma-separated, out of {','.join(allowed)}")
        return tuple(name for name in allowed if name in names)

    return parse


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing server (its admin database); default embedded")
    parser.add_argument("--seconds", type=int, default=10, help="length of each pgbench run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement")
    parser.add_argument("--quick", action="store_true", help="3 s runs, one round")
    parser.add_argument("--no-fsync", action="store_true", help="embedded server with fsync off")
    parser.add_argument(
        "--workloads",
        type=name_list(SCRIPTS),
        default=SCRIPTS,
        help=f"pgbench workloads, default {','.join(SCRIPTS)} (the bulk table runs with update)",
    )
    parser.add_argument(
        "--variants",
        type=name_list(VARIANTS),
        default=VARIANTS,
        help=f"databases to measure, default all: {','.join(VARIANTS)} (plain always runs)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    seconds, rounds = (3, 1) if args.quick else (args.seconds, args.rounds)
    variants = needed_variants(args.variants, args.workloads)
    with server(args.dsn, fsync=not args.no_fsync) as admin:
        dsns = prepare(admin, "cdcb_bench", variants)
        try:
            with psycopg.connect(admin) as conn:
                got = conn.execute("SELECT version(), current_setting('fsync')").fetchone()
            print(f"{got[0].split(' on ')[0]}, fsync {got[1]}" if got else "")
            medians = capture_table(dsns, args.workloads, seconds, rounds)
            floors_table(dsns, medians)
            if runs_bulk(variants, args.workloads):
                bulk_table(dsns, rounds)
        finally:
            drop_databases(admin, dsns)


if __name__ == "__main__":
    main()
