"""Whole-transaction delivery: relay throughput against a baseline, and DB -> DB over
foreign-key-linked tables. Both printed by one run.

    git archive <baseline commit> | tar -x -C /tmp/cdcb-baseline
    .venv/bin/python bench/transactions.py --baseline /tmp/cdcb-baseline

On an embedded PostgreSQL 18 (fsync off), the bridges as real processes.

1. Relay, many small independent transactions, batch 500, concurrency 4: N transactions
   of two new customers each are committed while the relay is stopped (SIGSTOP); the
   clock runs from SIGCONT until the outbox is empty, against the minimal acking peer
   (bench/relay/peer.py). The baseline's code (a source tree given by --baseline, run
   through PYTHONPATH, with its own install in its own database) and this tree's take
   turns, --rounds times each; the ratio is of the medians. Each turn also gives the
   relay process's CPU per change (from /proc), which moves far less than the rate
   on a shared machine.
2. DB -> DB, foreign-key-linked tables (tests/fixtures/fk_schema.sql): orders of one
   customer, two orders and three lines each (9 changes a transaction), written by 4
   writers while the shop's relay is stopped; the clock runs from SIGCONT until the ERP
   (its own `serve`) holds every row. This tree's code only.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from cdc_bridge.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "inbound"))
from db_to_db import free_port, listening  # noqa: E402 - a sibling bench script

FIXTURES = ROOT / "tests" / "fixtures"
SECRET = "bench-secret"
RELAY_TARGET = 0.9
DB_TARGET = 10_000


def wait(what: str, check: Callable[[], bool], timeout: float = 600.0) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.002)
    return time.perf_counter()


_POLLERS: dict[str, psycopg.Connection[Any]] = {}


def scalar(dsn: str, query: str) -> Any:
    """One value, on a connection kept per database: the clock's polls (every 2 ms) would
    otherwise start a PostgreSQL backend each, CPU taken from the bridges measured."""
    conn = _POLLERS.get(dsn)
    if conn is None or conn.closed:
        conn = _POLLERS[dsn] = psycopg.connect(dsn, autocommit=True)
    row = conn.execute(query.encode()).fetchone()
    return row[0] if row else None


class Code:
    """A source tree of cdc-bridge, run through PYTHONPATH from a neutral directory."""

    def __init__(self, name: str, tree: Path, workdir: Path) -> None:
        self.name, self.tree, self.workdir = name, tree, workdir

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.tree), "BRIDGE_SECRET": SECRET}

    def command(self, config: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "cdc_bridge", "--config", str(config), *args]

    def install(self, config: Path, dsn: str) -> None:
        rendered = subprocess.run(
            self.command(config, "sql", "render"),
            env=self.env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(rendered.encode())

    def start(self, config: Path, command: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command(config, command),
            env=self.env(),
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads); 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    after_name = stat.rsplit(")", 1)[1].split()  # fields 3.. (utime is 14, stime 15)
    return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGCONT)
    process.terminate()
    process.wait(60)


class Bench:
    def __init__(self, server: EmbeddedPostgres, workdir: Path) -> None:
        self.admin = server.dsn
        self.workdir = workdir
        self.databases = 0

    def database(self, schema: Path) -> str:
        self.databases += 1
        name = f"bench_{self.databases}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = psycopg.conninfo.make_conninfo(self.admin, dbname=name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema.read_text().encode())
        return dsn

    def config(self, name: str, data: dict[str, Any]) -> Path:
        path = self.workdir / f"{name}-{self.databases}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    # ------------------------------------------------------------ 1. relay

    def relay_run(self, code: Code, peer_url: str, transactions: int) -> tuple[float, float]:
        """Changes/s from SIGCONT until the outbox is empty, and the relay's CPU
        microseconds per change in that time (steadier than the rate on a shared machine)."""
        dsn = self.database(FIXTURES / "schema.sql")
        data = yaml.safe_load((FIXTURES / "erp.yaml").read_text())
        data["database"]["url"] = dsn
        data["peer"].update({"url": peer_url, "secret": SECRET})
        data["relay"] = {
            "batch_size": 500,
            "concurrency": 4,
            "poll_interval_s": 1,
            "metrics_listen": None,
        }
        data["logging"] = {"level": "WARNING"}
        config = self.config("relay", data)
        code.install(config, dsn)
        relay = code.start(config, "run")
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO customers VALUES (0, 'warm-up', NULL, 'std')")
            wait(
                "the relay to lead",
                lambda: not scalar(dsn, "SELECT EXISTS (SELECT FROM cdc_bridge.outbox)"),
            )
            relay.send_signal(signal.SIGSTOP)
            write_small_transactions(dsn, transactions)
            cpu = cpu_seconds(relay.pid)
            relay.send_signal(signal.SIGCONT)
            started = time.perf_counter()
            done = wait(
                "the outbox to drain",
                lambda: not scalar(dsn, "SELECT EXISTS (SELECT FROM cdc_bridge.outbox)"),
            )
            cpu = cpu_seconds(relay.pid) - cpu
            failed = scalar(dsn, "SELECT count(*) FROM cdc_bridge.failed")
            assert failed == 0, f"{failed} failed changes"
        finally:
            stop(relay)
        changes = 2 * transactions
        return changes / (done - started), 1e6 * cpu / changes

    # ------------------------------------------------------------ 2. DB -> DB

    def db_to_db(self, code: Code, orders: int) -> tuple[float, int]:
        dsns = {side: self.database(FIXTURES / "fk_schema.sql") for side in ("shop", "erp")}
        ports = {side: free_port() for side in dsns}
        configs = {}
        for side, peer, sor in (("shop", "erp", "local"), ("erp", "shop", "peer")):
            configs[side] = self.config(
                side,
                {
                    "system": side,
                    "database": {"url": dsns[side]},
                    "inbound": {"listen": f"127.0.0.1:{ports[side]}"},
                    "peer": {
                        "name": peer,
                        "url": f"http://127.0.0.1:{ports[peer]}",
                        "secret": SECRET,
                    },
                    "relay": {"batch_size": 500, "metrics_listen": None, "poll_interval_s": 1},
                    "logging": {"level": "WARNING"},
                    "tables": {t: {"key": k, "sor": sor} for t, k in FK_TABLES.items()},
                },
            )
            code.install(configs[side], dsns[side])
        serve = code.start(configs["erp"], "serve")
        relay = None
        try:
            wait("the ERP's serve", lambda: listening(ports["erp"]), 60)
            relay = code.start(configs["shop"], "run")
            with psycopg.connect(dsns["shop"], autocommit=True) as conn:
                conn.execute("INSERT INTO categories (name) VALUES ('warm-up')")
            wait(
                "the relay to lead",
                lambda: scalar(dsns["erp"], "SELECT count(*) FROM categories") == 1,
            )
            relay.send_signal(signal.SIGSTOP)
            write_orders(dsns["shop"], orders)
            changes = scalar(dsns["shop"], "SELECT count(*) FROM cdc_bridge.outbox")
            lines = scalar(dsns["shop"], "SELECT count(*) FROM order_lines")
            relay.send_signal(signal.SIGCONT)
            started = time.perf_counter()
            done = wait(
                "the ERP to hold every row",
                # The ERP's rows are counted once the outbox is empty (counting them at
                # every poll cost the ERP's PostgreSQL a tenth of its CPU).
                lambda: (
                    not scalar(dsns["shop"], "SELECT EXISTS (SELECT FROM cdc_bridge.outbox)")
                    and scalar(dsns["erp"], "SELECT count(*) FROM order_lines") == lines
                ),
            )
            failed = scalar(dsns["shop"], "SELECT count(*) FROM cdc_bridge.failed")
        finally:
            if relay is not None:
                stop(relay)
            stop(serve)
        return changes / (done - started), failed


FK_TABLES = {
    "public.customers": ["id"],
    "public.orders": ["id"],
    "public.order_lines": ["order_id", "line_no"],
    "public.categories": ["id"],
}


def write_small_transactions(dsn: str, count: int) -> None:
    """`count` transactions of two new customers each (pipelined, one commit each)."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.pipeline() as pipeline:
        for i in range(1, count + 1):
            conn.execute(
                "INSERT INTO customers VALUES (%s, 'name', NULL, 'std'), (%s, 'name', NULL, 'std')",
                (2 * i, 2 * i + 1),
            )
            pipeline.sync()  # ends the implicit transaction: one commit per INSERT


def write_orders(dsn: str, orders: int, writers: int = 4) -> None:
    """Transactions of a customer, two orders and three lines each, by `writers` threads."""

    def work(share: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for n in range(share):
                with conn.transaction():
                    cur = conn.execute(
                        "INSERT INTO customers (name, tier, credit, since) "
                        "VALUES ('c', 'gold', 12.5, now()) RETURNING id"
                    )
                    customer = cur.fetchone()[0]  # type: ignore[index]
                    for _ in range(2):
                        order = conn.execute(
                            "INSERT INTO orders (customer_id, line_count, total, tags) "
                            "VALUES (%s, 3, 30.75, '{web}') RETURNING id",
                            (customer,),
                        ).fetchone()[0]  # type: ignore[index]
                        conn.execute(
                            "INSERT INTO order_lines SELECT %s, g, 'SKU-' || g, g, 10.25 "
                            "FROM generate_series(1, 3) g",
                            (order,),
                        )
                _ = n

    threads = [threading.Thread(target=work, args=(orders // writers,)) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline",
        type=Path,
        required=True,
        help="a source tree of the baseline commit (git archive | tar -x)",
    )
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--orders", type=int, default=4_000, help="9 changes each")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with (
        EmbeddedPostgres() as server,
        tempfile.TemporaryDirectory(prefix="cdc-bridge-bench-") as tmp,
    ):
        workdir = Path(tmp)
        bench = Bench(server, workdir)
        codes = [Code("baseline", args.baseline.resolve(), workdir), Code("this", ROOT, workdir)]
        port = free_port()
        peer = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "relay" / "peer.py"), str(port)]
        )
        try:
            wait("the bench peer", lambda: listening(port), 30)
            rates: dict[str, list[float]] = {c.name: [] for c in codes}
            cpus: dict[str, list[float]] = {c.name: [] for c in codes}
            print(
                f"1. relay, {args.transactions} transactions of 2 changes, batch 500, "
                "concurrency 4 (changes/s)"
            )
            for round_ in range(1, args.rounds + 1):
                for code in codes:
                    rate, cpu = bench.relay_run(
                        code, f"http://127.0.0.1:{port}", args.transactions
                    )
                    rates[code.name].append(rate)
                    cpus[code.name].append(cpu)
                    print(
                        f"   round {round_} {code.name:8}: {rate:,.0f}, "
                        f"relay CPU {cpu:.1f} us/change",
                        flush=True,
                    )
        finally:
            peer.terminate()
            peer.wait(10)
        base, this = (statistics.median(rates[c.name]) for c in codes)
        print(
            f"   median baseline {base:,.0f}, this {this:,.0f}: ratio {this / base:.2f}x "
            f"(target {RELAY_TARGET}x)"
        )
        base_cpu, this_cpu = (statistics.median(cpus[c.name]) for c in codes)
        print(
            f"   relay CPU per change, median: baseline {base_cpu:.1f} us, this "
            f"{this_cpu:.1f} us: baseline / this {base_cpu / this_cpu:.2f}x"
        )
        rate, failed = bench.db_to_db(codes[1], args.orders)
        print(
            f"2. DB -> DB, FK-linked tables, {args.orders} orders of 9 changes, batch 500: "
            f"{rate:,.0f} changes/s, {failed} failed (target {DB_TARGET:,}/s)"
        )


if __name__ == "__main__":
    main()
