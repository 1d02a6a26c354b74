"""Capture cost: the install against the reference designs and the floors, in one run.

Run:  .venv/bin/python bench/capture.py [--quick] [--seconds N] [--rounds N] [--no-fsync]
          [--dsn URL] [--workloads update,insert,mixed] [--clients 8,1] [--variants ...]
          [--no-latency]

Without --dsn it starts an embedded PostgreSQL 18 with fsync on; PgQ (a reference design)
is only there on a server that has the extension, e.g. the system PostgreSQL 15 with
`apt-get install postgresql-15-pgq3` (the run says so when it is missing).

Each variant gets a database with the same 100k-row table (`capture_sql/schema.sql`):
- `plain`: no trigger, the baseline of every ratio;
- cdc-bridge installs (`cdc-bridge sql render`): `shipping` (a relay is busy shipping:
  nobody holds the listening key, writers send no NOTIFY), `stopped`, `crashed` (before
  each run a real `cdc-bridge run` starts, goes idle holding the listening key, and is
  stopped with SIGTERM / killed with SIGKILL), `never` (no relay ever ran), `listening`
  (a session holds the key through the run, as an idle relay does: every writer
  notifies), `per_field` (the table configured
  field by field) and `where` (a `where` filter every row passes);
- reference designs: `ref_whole_row` (PL/pgSQL row trigger writing to_jsonb(NEW) and
  to_jsonb(OLD)), `ref_statement` (statement-level triggers with transition tables),
  `ref_pgq` (PgQ's C trigger logutriga);
- floors, not working captures: `noop_trigger` and `constant_row` (the install's capture
  triggers replaced by PL/pgSQL row triggers that do nothing / insert a constant outbox
  row) and `c_trigger` (update only: a C-language row trigger that writes nothing).

pgbench runs single-row transactions; each round runs every variant once, in an order
rotated from round to round, and a ratio is taken to the `plain` run of the same round:
the table shows the median ratio and its spread over the rounds. Then: one UPDATE of all
100k rows (seconds, median), outbox bytes per captured single-row update, the relay's
wake-up latency (`bench/relay/bench_relay.py --latency-only`, its own embedded server),
and each target of the capture-cost issue marked met or missed in this run.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdc_bridge import sql as queries
from cdc_bridge.capture.function import listening_key
from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config
from cdc_bridge.embedded import EmbeddedPostgres, _wheel_install_dir

HERE = Path(__file__).resolve().parent / "capture_sql"
CLI = str(Path(sys.executable).parent / "cdc-bridge")
SCRIPTS = ("update", "insert", "mixed")
CLIENTS = (8, 1)
LABELS = {
    "plain": "no trigger",
    "shipping": "cdc-bridge, relay shipping",
    "stopped": "cdc-bridge, relay stopped",
    "crashed": "cdc-bridge, relay crashed (SIGKILL)",
    "never": "cdc-bridge, relay never started",
    "listening": "cdc-bridge, relay idle listening",
    "per_field": "cdc-bridge, per-field table",
    "where": "cdc-bridge, `where` filter",
    "ref_whole_row": "ref: whole-row row trigger",
    "ref_statement": "ref: statement-level trigger",
    "ref_pgq": "ref: PgQ logutriga (C)",
    "noop_trigger": "floor: no-op PL/pgSQL trigger",
    "constant_row": "floor: constant outbox row",
    "c_trigger": "floor: no-op C trigger",
}
VARIANTS = tuple(LABELS)
DEFAULT_VARIANTS = tuple(v for v in VARIANTS if v != "listening")
CAPTURE = "shipping"  # the install as writers see it while the relay works
AWAY = ("stopped", "crashed", "never")
REFERENCES = ("ref_whole_row", "ref_statement", "ref_pgq")
INSTALLED = (
    "shipping", *AWAY, "listening", "per_field", "where",
    "noop_trigger", "constant_row", "c_trigger",
)  # fmt: skip
CONFIG_FILE = {"per_field": "bench_fields.yaml", "where": "bench_where.yaml"}
SETUP_SQL: dict[str, tuple[str, ...]] = {
    "ref_whole_row": ("ref_outbox.sql", "ref_whole_row.sql"),
    "ref_statement": ("ref_outbox.sql", "ref_statement.sql"),
    "ref_pgq": ("ref_pgq.sql",),
    "noop_trigger": ("noop_trigger.sql", "floor_triggers.sql"),
    "constant_row": ("constant_row.sql", "floor_triggers.sql"),
    "c_trigger": ("c_trigger.sql",),
}
UPDATE_ONLY = ("c_trigger",)
# Where each design keeps its events (bulk and storage runs).
BULK = ("plain", CAPTURE, *REFERENCES)
STORAGE = (CAPTURE, "per_field", *REFERENCES)
_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")
_LATENCY = re.compile(r"p50 ([0-9.]+) ms, p99 ([0-9.]+) ms")

# (workload, clients) -> variant -> ratio per round
Ratios = dict[tuple[str, int], dict[str, list[float]]]


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


def has_pgq(admin_dsn: str) -> bool:
    with psycopg.connect(admin_dsn) as conn:
        found = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pgq'")
        return found.fetchone() is not None


# ------------------------------------------------------------------ databases


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


def config_text(dsn: str, variant: str) -> str:
    """The bridge config of an installed variant, with a relay that serves no metrics."""
    text = read(CONFIG_FILE.get(variant, "bench.yaml")).replace("${BENCH_DATABASE_URL}", dsn)
    data = yaml.safe_load(text)
    data["relay"] = {"metrics_listen": None, "poll_interval_s": 60}
    return yaml.safe_dump(data)


def install(dsn: str, variant: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(read("schema.sql"))
        if variant in INSTALLED:
            config = parse_config(config_text(dsn, variant), f"{variant}.yaml", {})
            conn.execute(render_install(config))
        for name in SETUP_SQL.get(variant, ()):
            conn.execute(read(name))


def drop_databases(admin_dsn: str, dsns: dict[str, str]) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for dsn in dsns.values():
            name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(str(name))))


def event_tables(conn: psycopg.Connection[Any]) -> list[sql.Identifier]:
    """The tables a design writes its events to (PgQ: the queue's event tables; the
    bridge: the outbox's two partitions)."""
    rows = conn.execute(
        "SELECT s.nspname, c.relname FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND ((s.nspname = 'cdc_bridge' AND c.relname ~ '^outbox_[01]$')"
        "  OR (s.nspname = 'public' AND c.relname = 'ref_outbox')"
        "  OR (s.nspname = 'pgq' AND c.relname ~ '^event_[0-9]+(_[0-9]+)?$'))"
    ).fetchall()
    return [sql.Identifier(schema, name) for schema, name in rows]


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(read("reset.sql"))
        for table in event_tables(conn):
            conn.execute(sql.SQL("TRUNCATE {}").format(table))
        conn.execute("VACUUM ANALYZE public.items")
        conn.execute("CHECKPOINT")


def events_size(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [t.as_string(conn) for t in event_tables(conn)]
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(%s::text[]) AS t",
            (tables,),
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


# ------------------------------------------------------------------ a relay that goes away


def listening_holder(dsn: str) -> int | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        key = listening_key("cdc_bridge")
        row = conn.execute(queries.query("relay_listening_holder"), {"key": key}).fetchone()
    return None if row is None else int(row[0])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def relay_goes_away(dsn: str, variant: str, workdir: Path) -> None:
    """A real `cdc-bridge run` starts, goes idle (holding the key), then stops or dies."""
    path = workdir / f"{variant}.yaml"
    path.write_text(config_text(dsn, variant))
    with open(workdir / f"{variant}.log", "ab") as log:
        relay = subprocess.Popen([CLI, "--config", str(path), "run"], stdout=log, stderr=log)
    wait_for(lambda: listening_holder(dsn) is not None, "the relay to listen")
    relay.send_signal(signal.SIGKILL if variant == "crashed" else signal.SIGTERM)
    relay.wait(30)
    wait_for(lambda: listening_holder(dsn) is None, "the relay's session to end")


@contextmanager
def key_held(dsn: str, hold: bool) -> Iterator[None]:
    """While `hold`, a session holds the listening key, as an idle relay does."""
    if not hold:
        yield
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("LISTEN cdc_bridge")
        key = listening_key("cdc_bridge")
        conn.execute(queries.query("relay_listen"), {"key": key, "timeout": "60s"})
        yield


# ------------------------------------------------------------------ measurements


def run_pgbench(
    dsn: str, variant: str, script: str, clients: int, seconds: int, workdir: Path
) -> float:
    reset(dsn)
    if variant in ("stopped", "crashed"):
        relay_goes_away(dsn, variant, workdir)
    args = [pgbench(), "-n", "-c", str(clients), "-j", str(clients), "-T", str(seconds)]
    args += ["-f", str(HERE / f"{script}.pgbench"), dsn]
    with key_held(dsn, variant == "listening"):
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    match = _TPS.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"pgbench failed ({variant}): {done.stderr.strip()[-500:]}")
    return float(match.group(1))


def rotated(items: list[str], turn: int) -> list[str]:
    shift = turn % len(items) if items else 0
    return items[shift:] + items[:shift]


def measure(
    dsns: dict[str, str], script: str, clients: int, args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, list[float]], list[float]]:
    """Per-round ratios to `plain` of every variant that runs this workload, and plain's tps."""
    variants = [v for v in dsns if script == "update" or v not in UPDATE_ONLY]
    ratios: dict[str, list[float]] = {v: [] for v in variants if v != "plain"}
    plain: list[float] = []
    for turn in range(args.rounds):
        tps = {
            v: run_pgbench(dsns[v], v, script, clients, args.seconds, workdir)
            for v in rotated(variants, turn)
        }
        plain.append(tps["plain"])
        for variant in ratios:
            ratios[variant].append(tps[variant] / tps["plain"])
    return ratios, plain


def spread(values: list[float]) -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.2f}"
    return f"{median:.2f} ({min(values):.2f}-{max(values):.2f})"


def pgbench_table(
    dsns: dict[str, str], args: argparse.Namespace, workdir: Path
) -> Ratios:
    print(
        f"\nSingle-row transactions (pgbench, {args.seconds} s per run, {args.rounds} rounds,"
        " order rotated): tps ratio to no trigger, median (min-max)"
    )
    results: Ratios = {}
    for script in args.workloads:
        for clients in args.clients:
            ratios, plain = measure(dsns, script, clients, args, workdir)
            results[script, clients] = ratios
            base = statistics.median(plain)
            print(f"\n{script}, {clients} client(s): no trigger {base:,.0f} tps")
            for variant, values in ratios.items():
                print(f"  {LABELS[variant]:<40}{spread(values)}", flush=True)
    return results


BULK_LIMIT_S = 120


def bulk_seconds(dsn: str) -> float:
    """One 100k-row UPDATE, in a session that made single-row updates first (as an
    application's does), so a plan cached for one row would show here (the reference
    statement-level trigger falls into exactly that: nested loops over 100k x 100k rows).
    Past BULK_LIMIT_S the statement is cancelled and counts as infinite."""
    reset(dsn)
    with psycopg.connect(dsn) as conn:
        for key in range(1, 4):
            conn.execute("UPDATE public.items SET qty = qty + 1 WHERE id = %s", (key,))
            conn.commit()
        conn.execute(f"SET statement_timeout = '{BULK_LIMIT_S}s'")
        started = time.perf_counter()
        try:
            conn.execute(read("bulk_update.sql"))
        except psycopg.errors.QueryCanceled:
            conn.rollback()
            return float("inf")
        conn.commit()
        return time.perf_counter() - started


def bulk_table(dsns: dict[str, str], rounds: int) -> dict[str, float]:
    variants = [v for v in BULK if v in dsns]
    took: dict[str, list[float]] = {v: [] for v in variants}
    for turn in range(rounds):
        for variant in rotated(variants, turn):
            took[variant].append(bulk_seconds(dsns[variant]))
    base = statistics.median(took["plain"])
    print(f"\nOne UPDATE of all 100k rows: seconds, median of {rounds} (x no trigger)")
    times = {}
    for variant in variants:
        times[variant] = statistics.median(took[variant]) / base
        print(f"  {LABELS[variant]:<40}{statistics.median(took[variant]):>6.2f} s"
              f"{times[variant]:>7.2f}x")  # fmt: skip
    return times


def storage_table(dsns: dict[str, str]) -> dict[str, float]:
    print("\nStorage per captured single-row update (20,000 updates; table, indexes, TOAST)")
    sizes = {}
    for variant in (v for v in STORAGE if v in dsns):
        dsn = dsns[variant]
        reset(dsn)
        before = events_size(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(read("bytes_per_update.sql"))
        sizes[variant] = (events_size(dsn) - before) / 20_000
        print(f"  {LABELS[variant]:<40}{sizes[variant]:>6.0f} bytes")
    return sizes


def latency() -> tuple[float, float] | None:
    script = Path(__file__).resolve().parent / "relay" / "bench_relay.py"
    done = subprocess.run(
        [sys.executable, str(script), "--latency-only", "--seconds", "10"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = _LATENCY.search(done.stdout)
    print(f"\nRelay wake-up latency: {done.stdout.strip() or done.stderr.strip()[-300:]}")
    return (float(found.group(1)), float(found.group(2))) if found else None


# ------------------------------------------------------------------ verdicts


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def targets(
    ratios: Ratios, bulk: dict[str, float], sizes: dict[str, float], lat: tuple[float, float] | None
) -> None:
    print("\nTargets, this run:")
    med = {key: {v: statistics.median(r) for v, r in rs.items()} for key, rs in ratios.items()}
    for script in ("update", "insert"):
        got = med.get((script, 8), {})
        if CAPTURE not in got:
            continue
        refs = [got[r] for r in REFERENCES if r in got]
        best = max(refs) if refs else None
        if best is not None:
            print(f"  single-row {script}, 8 clients: {got[CAPTURE]:.2f} vs best reference"
                  f" {best:.2f}: {verdict(got[CAPTURE] >= best)}")  # fmt: skip
        if "constant_row" in got:
            floor = got["constant_row"]
            print(f"  single-row {script}, 8 clients: {got[CAPTURE] / floor:.2f}x the constant-row"
                  f" floor (>= 0.85): {verdict(got[CAPTURE] >= 0.85 * floor)}")  # fmt: skip
        for away in (a for a in AWAY if a in got):
            ratio = got[away] / got[CAPTURE]
            print(f"  no cliff, {script} 8 clients, relay {away}: {ratio:.2f}x shipping"
                  f" (>= 0.95): {verdict(ratio >= 0.95)}")  # fmt: skip
    if CAPTURE in bulk:
        print(f"  bulk 100k-row UPDATE: {bulk[CAPTURE]:.2f}x no trigger (<= 3):"
              f" {verdict(bulk[CAPTURE] <= 3)}")  # fmt: skip
    if CAPTURE in sizes and "ref_pgq" in sizes:
        print(f"  bytes per update: {sizes[CAPTURE]:.0f} vs PgQ {sizes['ref_pgq']:.0f}:"
              f" {verdict(sizes[CAPTURE] <= sizes['ref_pgq'])}")  # fmt: skip
    if lat is not None:
        print(f"  wake-up latency p50 {lat[0]:.1f} ms (<= 10): {verdict(lat[0] <= 10)}")


# ------------------------------------------------------------------ command line


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
    parser.add_argument("--seconds", type=int, default=8, help="length of each pgbench run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement")
    parser.add_argument("--quick", action="store_true", help="3 s runs, one round")
    parser.add_argument("--no-fsync", action="store_true", help="embedded server with fsync off")
    parser.add_argument("--no-latency", action="store_true", help="skip the relay latency run")
    parser.add_argument(
        "--workloads",
        type=name_list(SCRIPTS),
        default=("update", "insert"),
        help=f"pgbench workloads out of {','.join(SCRIPTS)}, default update,insert",
    )
    parser.add_argument(
        "--clients",
        type=lambda text: tuple(int(c) for c in text.split(",")),
        default=CLIENTS,
        help="client counts, default 8,1",
    )
    parser.add_argument(
        "--variants",
        type=name_list(VARIANTS),
        default=DEFAULT_VARIANTS,
        help=f"databases, default all but listening; out of {','.join(VARIANTS)}",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 3, 1
    return args


def main() -> None:
    args = parse_args()
    with server(args.dsn, fsync=not args.no_fsync) as admin:
        variants = tuple(v for v in VARIANTS if v == "plain" or v in args.variants)
        if "ref_pgq" in variants and not has_pgq(admin):
            print("PgQ is not installed on this server: the ref_pgq design is left out"
                  " (Debian/Ubuntu: apt-get install postgresql-15-pgq3, then --dsn)")  # fmt: skip
            variants = tuple(v for v in variants if v != "ref_pgq")
        dsns = prepare(admin, f"cdcb_capture_{os.getpid()}", variants)  # servers are shared
        try:
            with psycopg.connect(admin) as conn:
                got = conn.execute("SELECT version(), current_setting('fsync')").fetchone()
            print(f"{got[0].split(' on ')[0]}, fsync {got[1]}" if got else "")
            with tempfile.TemporaryDirectory(prefix="capture-bench-") as workdir:
                ratios = pgbench_table(dsns, args, Path(workdir))
            bulk = bulk_table(dsns, args.rounds) if CAPTURE in dsns else {}
            sizes = storage_table(dsns)
        finally:
            drop_databases(admin, dsns)
    lat = None if args.no_latency else latency()
    targets(ratios, bulk, sizes, lat)


if __name__ == "__main__":
    main()
