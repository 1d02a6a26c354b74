"""Soak: a steady load for a given time; is every bridge table flat, and is latency?

Usage:
    .venv/bin/python bench/soak/run.py [--rate 1500] [--minutes 30] [--interval 30]
        [--retention-s 120] [--retention-interval-s 30] [--autovacuum on|off] [--writers 4]
        [--least-privilege]

Two databases, `erp` and `shop`, and the two processes that carry ERP changes to the shop:
`cdc-bridge run` (the ERP's relay) and `cdc-bridge serve` (the shop's receiver), each a real
process with the defaults except the shortened retentions given here (so that several
retention periods pass in the run). `--writers` threads write single-row transactions to
the ERP at `--rate` in all (a mix of 40 % updates, 40 % inserts, 20 % deletes of order
lines with numeric(20,6) amounts, numeric(30,0) serials, jsonb, an enum and a
timestamptz; numbers stay within 15 significant digits, which every version of the wire
encoding carries exactly).
One more thread updates a heartbeat row once a second; another polls the shop every 5 ms
and records when each beat arrives: commit-to-visible latency through both bridges.

Every `--interval` seconds it prints the size of every bridge table at both sides
(pg_total_relation_size), the resident memory of `run` and `serve`, the writers' achieved
rate and the heartbeat latency percentiles of the interval. At the end it waits for the
ERP's outbox to drain, compares both databases row by row (row::text) and prints the
bytes per row of each bridge table (the sizing table in README.md comes from these).

`--autovacuum off` switches autovacuum off for every bridge table of both databases
(ALTER TABLE ... SET (autovacuum_enabled = off)), so the tables must stay flat by what the
bridge does itself. Uses $CDC_BRIDGE_BENCH_DSN (an admin DSN of a server where it may
create and drop databases), or an embedded PostgreSQL 18.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.common import bench_database, server
from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config

SECRET = "soak-secret"
SCHEMA = """
CREATE TYPE line_state AS ENUM ('open', 'picked', 'shipped');
CREATE TABLE orders (
    id bigint PRIMARY KEY, customer text NOT NULL, placed_at timestamptz NOT NULL
);
CREATE TABLE order_lines (
    order_id bigint NOT NULL REFERENCES orders ON DELETE CASCADE,
    line_no int NOT NULL,
    sku text NOT NULL,
    qty int NOT NULL,
    amount numeric(20,6) NOT NULL,
    serial numeric(30,0),
    state line_state NOT NULL DEFAULT 'open',
    attrs jsonb,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE heartbeat (id int PRIMARY KEY, beat bigint NOT NULL, at timestamptz NOT NULL);
INSERT INTO orders SELECT i, 'customer ' || i, now() FROM generate_series(1, 1000) i;
INSERT INTO heartbeat VALUES (1, 0, now());
"""
# At the shop only: when `serve` wrote each beat (its transaction's start, and the row
# itself), for the breakdown of the heartbeat's latency. Not a bridge table, not compared.
SHOP_TRACE = """
CREATE TABLE heartbeat_applied (
    beat bigint PRIMARY KEY, xact_at timestamptz NOT NULL, row_at timestamptz NOT NULL
);
CREATE FUNCTION heartbeat_applied() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO heartbeat_applied VALUES (NEW.beat, now(), clock_timestamp())
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER heartbeat_applied AFTER INSERT OR UPDATE ON heartbeat
    FOR EACH ROW EXECUTE FUNCTION heartbeat_applied();
ALTER TABLE heartbeat ENABLE ALWAYS TRIGGER heartbeat_applied;
"""
# At the ERP: when each beat was captured and when the batch that carried it left (its
# last attempt's record time less the attempt's duration). The key's hash index finds
# the heartbeat's changes in `delivered` (kept for --retention-s, longer than an interval).
ERP_TRACE = """
SELECT (d.fields ->> 'beat')::bigint, extract(epoch FROM d.captured_at)::float8,
       extract(epoch FROM a.attempted_at)::float8 - a.duration_ms / 1000,
       extract(epoch FROM a.attempted_at)::float8
FROM cdc_bridge.delivered d
CROSS JOIN LATERAL (
    SELECT attempted_at, duration_ms FROM cdc_bridge.attempts a
    WHERE a.batch_id = d.batch_id ORDER BY attempted_at DESC LIMIT 1
) a
WHERE d.key = '{"id": 1}'::jsonb AND d.table_name = 'public.heartbeat'
  AND (d.fields ->> 'beat')::bigint = ANY(%(beats)s)
"""
# With --least-privilege, `run` and `serve` log in as this role: a member of the relay
# role, owning nothing (README: DBA guide). Roles belong to the server: it is kept.
LOGIN = "cdc_bridge_soak"
LOGIN_ROLE = """
DO $role$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdc_bridge_soak') THEN
        CREATE ROLE cdc_bridge_soak LOGIN;
    END IF;
END $role$;
GRANT cdc_bridge_relay TO cdc_bridge_soak;
"""
ORDERS = 1000  # every line belongs to one of these (present at both sides from the start)
TABLES = ("public.order_lines", "public.heartbeat")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config(side: str, dsn: str, ports: dict[str, int], args: argparse.Namespace) -> str:
    """`erp` ships the lines and the heartbeat; `shop` receives them."""
    erp = side == "erp"
    data: dict[str, Any] = {
        "system": side,
        "database": {"url": dsn},
        "inbound": {
            "listen": f"127.0.0.1:{ports[side]}",
            "applied_key_retention_days": args.retention_s / 86400,
        },
        "peer": {
            "name": "shop" if erp else "erp",
            "url": f"http://127.0.0.1:{ports['shop' if erp else 'erp']}",
            "secret": SECRET,
        },
        "relay": {
            "metrics_listen": f"127.0.0.1:{ports[side + '_metrics']}",
            "delivered_retention_days": args.retention_s / 86400,
            "retention_interval_s": args.retention_interval_s,
        },
        "tables": {t: {"key": _key(t), "sor": "local" if erp else "peer"} for t in TABLES},
    }
    return yaml.safe_dump(data)


def _key(table: str) -> list[str]:
    return ["order_id", "line_no"] if table == "public.order_lines" else ["id"]


# ------------------------------------------------------------------ the load


@dataclass
class Counters:
    written: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies_ms: list[float] = field(default_factory=list)
    sent: dict[int, float] = field(default_factory=dict)
    # Wall-clock times (comparable with the databases' clocks) of each beat: written, and
    # seen at the shop (beats not yet broken down).
    sent_wall: dict[int, float] = field(default_factory=dict)
    seen_wall: dict[int, float] = field(default_factory=dict)

    def take_latencies(self) -> list[float]:
        with self.lock:
            taken, self.latencies_ms = self.latencies_ms, []
            return taken

    def take_seen(self, before: float) -> dict[int, tuple[float, float]]:
        """(written, seen) wall times of the beats seen before `before` and not yet taken
        (the relay records a beat's batch after the shop shows it: a beat just seen waits
        for the next report)."""
        with self.lock:
            taken = {b: t for b, t in self.seen_wall.items() if t < before}
            for b in taken:
                del self.seen_wall[b]
            return {b: (self.sent_wall.pop(b), t) for b, t in taken.items() if b in self.sent_wall}


def writer(dsn: str, rate: float, stop: threading.Event, counters: Counters, seed: int) -> None:
    """Single-row transactions at `rate`/s: updates, inserts and deletes of order lines."""
    rng = random.Random(seed)
    live: list[tuple[int, int]] = []
    next_line = seed * 100_000_000
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        done = 0
        while not stop.is_set():
            roll = rng.random()
            if live and roll < 0.4:
                order_id, line_no = rng.choice(live)
                conn.execute(
                    "UPDATE order_lines SET qty = qty + 1, amount = amount + 0.000001,"
                    " state = 'picked', changed_at = now() WHERE order_id = %s AND line_no = %s",
                    (order_id, line_no),
                )
            elif live and roll < 0.6:
                order_id, line_no = live.pop(rng.randrange(len(live)))
                conn.execute(
                    "DELETE FROM order_lines WHERE order_id = %s AND line_no = %s",
                    (order_id, line_no),
                )
            else:
                next_line += 1
                key = (rng.randint(1, ORDERS), next_line)
                conn.execute(
                    "INSERT INTO order_lines (order_id, line_no, sku, qty, amount, serial, attrs)"
                    " VALUES (%s, %s, %s, 1, %s, %s, %s)",
                    (*key, f"SKU-{next_line % 5000}", f"{rng.randint(1, 10**8)}.123456",
                     10**14 + next_line,
                     psycopg.types.json.Jsonb({"big": 2**52 + next_line, "tags": ["a", "b"]})),
                )
                live.append(key)
                if len(live) > 5000:  # keep the table at a steady size
                    order_id, line_no = live.pop(0)
                    conn.execute(
                        "DELETE FROM order_lines WHERE order_id = %s AND line_no = %s",
                        (order_id, line_no),
                    )
                    done += 1
                    with counters.lock:
                        counters.written += 1
            done += 1
            with counters.lock:
                counters.written += 1
            ahead = done / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def heartbeat(dsn: str, stop: threading.Event, counters: Counters) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        beat = 0
        while not stop.wait(1.0):
            beat += 1
            with counters.lock:
                counters.sent[beat] = time.monotonic()
                counters.sent_wall[beat] = time.time()
            conn.execute("UPDATE heartbeat SET beat = %s, at = clock_timestamp()", (beat,))


def watch_heartbeat(dsn: str, stop: threading.Event, counters: Counters) -> None:
    seen = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute("SELECT beat FROM heartbeat").fetchone()
            now, wall = time.monotonic(), time.time()
            beat = int(row[0]) if row else 0
            if beat > seen:
                with counters.lock:
                    for b in range(seen + 1, beat + 1):
                        sent = counters.sent.pop(b, None)
                        if sent is not None:
                            counters.latencies_ms.append((now - sent) * 1000)
                            counters.seen_wall[b] = wall
                seen = beat
            time.sleep(0.005)


# ------------------------------------------------------------------ what is measured


def bridge_sizes(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            # The outbox counts with the two tables that inherit it.
            "SELECT c.relname, pg_total_relation_size(c.oid) + coalesce((SELECT"
            " sum(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i"
            " WHERE i.inhparent = c.oid), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'cdc_bridge' AND c.relkind = 'r'"
            " AND NOT EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid)"
            " ORDER BY c.relname"
        ).fetchall()
    return {name: int(size) for name, size in rows}


def bridge_rows(dsn: str, tables: list[str]) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {
            t: int(conn.execute(  # type: ignore[index]
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("cdc_bridge", t))
            ).fetchone()[0])
            for t in tables
        }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# The stages of a beat's latency, in order: the heartbeat's UPDATE until its capture;
# the capture until its batch left the relay (reads, lanes); until `serve` began the
# batch's transaction (HTTP, request parsing, a pooled connection); until the beat's row
# was written in it; until the watcher saw it (the rest of the batch, commit, polling).
STAGES = ("capture", "outbox", "to serve", "in apply", "to seen")


def breakdown(erp: str, shop: str, beats: dict[int, tuple[float, float]]) -> str:
    """Median / p99 ms of each stage over `beats` (beat -> written and seen wall times)."""
    wanted = sorted(beats)
    with psycopg.connect(erp, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # delivered may have no statistics
        shipped = {int(r[0]): r[1:] for r in conn.execute(ERP_TRACE, {"beats": wanted})}
    with psycopg.connect(shop, autocommit=True) as conn:
        applied = {int(r[0]): r[1:] for r in conn.execute(
            "SELECT beat, extract(epoch FROM xact_at)::float8, extract(epoch FROM row_at)::float8"
            " FROM heartbeat_applied WHERE beat = ANY(%s)", (wanted,))}
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    worst: tuple[float, float, list[float]] = (-1.0, 0.0, [])
    for beat in wanted:
        if beat not in shipped or beat not in applied:
            continue
        written, seen = beats[beat]
        captured, left, _ = shipped[beat]
        xact_at, row_at = applied[beat]
        times = (written, captured, left, xact_at, row_at, seen)
        spent = [(end - start) * 1000 for start, end in itertools.pairwise(times)]
        for name, ms in zip(STAGES, spent, strict=True):
            stages[name].append(ms)
        if seen - written > worst[0]:
            worst = (seen - written, written, spent)
    found = len(stages["capture"])
    if found < 2:
        return f"- (n={found})"
    parts = []
    for name, values in stages.items():
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        parts.append(f"{name} {cuts[49]:.0f}/{cuts[98]:.0f}")
    # The slowest beat, when it was written (to match with the logs of run and serve).
    at = time.strftime("%H:%M:%S", time.localtime(worst[1]))
    slowest = "/".join(f"{ms:.0f}" for ms in worst[2])
    return ", ".join(parts) + f" ms p50/p99 (n={found}); slowest written at {at}: {slowest}"


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends(dsn: str, application: str) -> list[int]:
    """The server processes of `application`'s connections to the database of `dsn`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE %s AND pid <> pg_backend_pid()", (application + "%",)
        ).fetchall()
    return [int(pid) for (pid,) in rows]


class CpuUse:
    """Share of one core each process group used since the last call (a process first
    seen counts all it used; backends that ended in between are not counted)."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self.at = time.monotonic()

    def shares(self, groups: dict[str, list[int]]) -> str:
        now = time.monotonic()
        spent: dict[str, float] = {}
        for name, pids in groups.items():
            for pid in pids:
                total = cpu_s(pid)
                spent[name] = spent.get(name, 0.0) + total - self.seen.get(pid, 0.0)
                self.seen[pid] = total
        elapsed, self.at = max(now - self.at, 1e-9), now
        return ", ".join(f"{name} {spent[name] / elapsed:.0%}" for name in groups)


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return f"p50 -, p95 -, p99 -, max - (n={len(values)})"
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return (f"p50 {cuts[49]:.0f}, p95 {cuts[94]:.0f}, p99 {cuts[98]:.0f}, "
            f"max {max(values):.0f} ms (n={len(values)})")


def equal(erp: str, shop: str) -> bool:
    query = ("SELECT r::text FROM {} r ORDER BY 1")
    for table in ("order_lines", "heartbeat"):
        statement = sql.SQL(query).format(sql.Identifier(table))
        with psycopg.connect(erp) as a, psycopg.connect(shop) as b:
            if a.execute(statement).fetchall() != b.execute(statement).fetchall():
                return False
    return True


def kib(size: int) -> str:
    return f"{size / 1024:,.0f}K"


def report(started: float, erp: str, shop: str, procs: dict[str, int], counters: Counters,
           previous: list[int], cpu: CpuUse) -> None:
    with counters.lock:
        written = counters.written
    elapsed = time.monotonic() - started
    rate = (written - previous[0]) / max(elapsed - previous[1], 1e-9)
    previous[:] = [written, elapsed]
    sides = {"erp": bridge_sizes(erp), "shop": bridge_sizes(shop)}
    sizes = "  ".join(
        f"{side}.{t} {kib(s)}" for side, found in sides.items() for t, s in found.items()
        if s > 8192 * 3 or t in ("outbox", "applied_keys")
    )
    memory = ", ".join(f"{name} {rss_mb(pid):.0f} MB" for name, pid in procs.items())
    print(f"[{elapsed / 60:5.1f} min] written {rate:,.0f}/s | heartbeat "
          f"{percentiles(counters.take_latencies())} | rss {memory}", flush=True)
    print(f"    heartbeat stages: {breakdown(erp, shop, counters.take_seen(time.time() - 2))}",
          flush=True)
    groups = {
        "run": [procs["run"]], "run's backends": backends(erp, "cdc-bridge relay"),
        "serve": [procs["serve"]], "serve's backends": backends(shop, "cdc-bridge serve"),
    }
    print(f"    cpu (of one core): {cpu.shares(groups)}", flush=True)
    print(f"    sizes: {sizes}", flush=True)


# ------------------------------------------------------------------ setup and run


@contextmanager
def bridges(admin: str, workdir: Path, args: argparse.Namespace) -> Iterator[
        tuple[str, str, dict[str, int]]]:
    ports = {k: free_port() for k in ("erp", "shop", "erp_metrics", "shop_metrics")}
    with bench_database(admin, "soak_erp") as erp, bench_database(admin, "soak_shop") as shop:
        dsns = {"erp": erp, "shop": shop}
        paths = {}
        for side, dsn in dsns.items():
            login = make_conninfo(dsn, user=LOGIN) if args.least_privilege else dsn
            text = config(side, login, ports, args)
            paths[side] = workdir / f"{side}.yaml"
            paths[side].write_text(text)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(SCHEMA.encode())
                if side == "shop":
                    conn.execute(SHOP_TRACE.encode())
                conn.execute(render_install(parse_config(text, side, {})))
                if args.least_privilege:
                    conn.execute(LOGIN_ROLE)
                if args.autovacuum == "off":
                    for (table,) in conn.execute(
                        # Every table, the outbox's two included.
                        "SELECT c.relname FROM pg_class c JOIN pg_namespace n"
                        " ON n.oid = c.relnamespace"
                        " WHERE n.nspname = 'cdc_bridge' AND c.relkind = 'r'"
                    ).fetchall():
                        conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)")
                                     .format(sql.Identifier("cdc_bridge", table)))
        processes = {
            "serve": start(paths["shop"], "serve", workdir / "serve.log"),
            "run": start(paths["erp"], "run", workdir / "run.log"),
        }
        try:
            wait_listening(ports["shop"])
            wait_listening(ports["erp_metrics"])
            yield erp, shop, {name: p.pid for name, p in processes.items()}
        finally:
            for process in processes.values():
                process.send_signal(signal.SIGTERM)
            for process in processes.values():
                process.wait(timeout=60)
            if args.keep_logs:
                for name in ("run.log", "serve.log"):
                    print(f"--- {name} (last lines)")
                    print("\n".join((workdir / name).read_text().splitlines()[-15:]))


def start(config_path: Path, command: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cdc_bridge", "--config", str(config_path), command],
            stdout=out, stderr=subprocess.STDOUT,
        )


def wait_listening(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout:.0f} s")


def drained(erp: str, timeout: float = 300.0) -> bool:
    deadline = time.monotonic() + timeout
    with psycopg.connect(erp, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM cdc_bridge.outbox").fetchone()
            if row and row[0] == 0:
                return True
            time.sleep(0.2)
    return False


def per_row(erp: str, shop: str) -> None:
    """Bytes per row of the tables that grow with the load, as they stand now."""
    for side, dsn, tables in (("erp", erp, ["delivered", "batches", "attempts", "outbox"]),
                              ("shop", shop, ["applied_keys", "watermarks"])):
        sizes = bridge_sizes(dsn)
        for table, rows in bridge_rows(dsn, [t for t in tables if t in sizes]).items():
            each = f"{sizes[table] / rows:,.0f} bytes/row" if rows else "no rows"
            print(f"  {side}.{table}: {rows:,} rows, {kib(sizes[table])}, {each}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1500.0, help="changes/s in all")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between reports")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--retention-s", type=float, default=120.0,
                        help="delivered history and applied-key age kept, seconds")
    parser.add_argument("--retention-interval-s", type=float, default=30.0)
    parser.add_argument("--autovacuum", choices=("on", "off"), default="on",
                        help="off: switched off for every bridge table")
    parser.add_argument("--keep-logs", action="store_true", help="print the logs' tails")
    parser.add_argument("--least-privilege", action="store_true",
                        help=f"run and serve log in as {LOGIN}, a member of the relay role"
                             " that owns nothing (as the README advises), not as the admin")
    args = parser.parse_args()
    with (
        server() as admin,
        tempfile.TemporaryDirectory(prefix="cdc-bridge-soak-") as workdir,
        bridges(admin, Path(workdir), args) as (erp, shop, procs),
    ):
        with psycopg.connect(erp) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        who = f"as {LOGIN} (relay role member)" if args.least_privilege else "as the admin"
        print(f"soak: {args.rate:,.0f} changes/s for {args.minutes} min, {args.writers} writers,"
              f" retention {args.retention_s:.0f} s (pruned every {args.retention_interval_s:.0f}"
              f" s), autovacuum {args.autovacuum} on bridge tables, bridges {who}, PostgreSQL"
              f" {version[0] if version else '?'}", flush=True)
        counters = Counters()
        stop = threading.Event()
        threads = [
            threading.Thread(target=writer, args=(erp, args.rate / args.writers, stop,
                                                  counters, i + 1))
            for i in range(args.writers)
        ]
        threads += [threading.Thread(target=heartbeat, args=(erp, stop, counters)),
                    threading.Thread(target=watch_heartbeat, args=(shop, stop, counters))]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        previous = [0, 0.0]
        cpu = CpuUse()
        try:
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(min(args.interval, args.minutes * 60 - (time.monotonic() - started)))
                report(started, erp, shop, procs, counters, previous, cpu)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        print("bytes per row at the end of the load:")
        per_row(erp, shop)
        ok = drained(erp) and equal(erp, shop)
        print(f"outbox drained and both databases equal (row::text): {'yes' if ok else 'NO'}")
        if not ok:
            raise SystemExit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
