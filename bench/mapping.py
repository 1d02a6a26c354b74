"""Mapping cost: DB -> DB through a mapped pair next to an unmapped pair, in one run.

    .venv/bin/python bench/mapping.py [--rounds 5] [--customers 20000] [--updates 10000]
    .venv/bin/python bench/mapping.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
    PYTHONPATH=/tmp/other-tree .venv/bin/python bench/mapping.py   # another commit's code

Each pair is two fresh databases on one server (an embedded PostgreSQL 18 by default, or
the server an admin `--dsn` names), the sender's `cdc-bridge run` and the receiver's
`cdc-bridge serve` as processes, relay batch 500.

- Unmapped: twin tables `customers(id bigint primary key, name, status char(1), email,
  credit numeric(20,6))`, `sor: local` at the ERP, `sor: peer` at the shop.
- Mapped: the same data as the ERP's `clients(client_no, full_name, state, mail, credit)`
  and the shop's `customers(id bigserial, name, active boolean, email, credit)`, entity
  `customer`: renames, one code map (state 'A'/'I' <-> active true/false) and one
  cross-reference lookup (the shop generates its own ids: `xref: [number]`).

The ERP writes `--customers` inserts, then `--updates` updates (state and credit), in
transactions of `--per-txn` rows, while its relay is stopped (SIGSTOP). The clock runs from
SIGCONT until the ERP's outbox is empty (every change acknowledged, so applied at the
shop). Then both databases are compared row by row (`row(...)::text`, through the
cross-reference for the mapped pair); any difference or failed change ends the run with
an error. The pairs take turns (the order alternates), `--rounds` times each; the ratio
is of the medians (mapped / unmapped; the target is >= 0.8). Each run also prints the CPU
per change of the relay, serve and each database's backends (from /proc, so 0 for a
server on another host): on a loaded machine it moves far less than the wall clock.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config
from cdc_bridge.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "inbound"))
sys.path.insert(0, str(ROOT / "bench"))
from db_to_db import free_port, listening  # noqa: E402 - sibling bench scripts
from transactions import cpu_seconds, stop, wait  # noqa: E402

SECRET = "bench-secret"
TARGET = 0.8
BATCH = 500

TWIN_SCHEMA = (
    "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, status char(1) NOT "
    "NULL CHECK (status IN ('A', 'I')), email text, credit numeric(20,6) NOT NULL)"
)
ERP_SCHEMA = (
    "CREATE TABLE clients (client_no bigint PRIMARY KEY, full_name text NOT NULL, state "
    "char(1) NOT NULL CHECK (state IN ('A', 'I')), mail text, credit numeric(20,6) NOT NULL)"
)
SHOP_SCHEMA = (
    "CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, active boolean "
    "NOT NULL, email text, credit numeric(20,6) NOT NULL)"
)


@dataclass(frozen=True)
class Pair:
    """One way of holding the same customers at both sides."""

    name: str
    erp_schema: str
    shop_schema: str
    erp_tables: dict[str, Any]
    shop_tables: dict[str, Any]
    insert: str  # (first, last) -> rows first..last
    update: str  # (first, last) -> flip the state, raise the credit
    erp_rows: str  # row(number, name, active, email, credit)::text, by number
    shop_rows: str
    xref: bool = False  # the shop keeps a cross-reference entry per row


UNMAPPED = Pair(
    name="unmapped",
    erp_schema=TWIN_SCHEMA,
    shop_schema=TWIN_SCHEMA,
    erp_tables={"public.customers": {"key": ["id"], "sor": "local"}},
    shop_tables={"public.customers": {"key": ["id"], "sor": "peer"}},
    insert="INSERT INTO customers SELECT {values}",
    update=(
        "UPDATE customers SET status = CASE status WHEN 'A' THEN 'I' ELSE 'A' END, "
        "credit = credit + 1000.000001 WHERE id BETWEEN %s AND %s"
    ),
    erp_rows=(
        "SELECT row(id, name, status = 'A', email, credit)::text FROM customers ORDER BY id"
    ),
    shop_rows=(
        "SELECT row(id, name, status = 'A', email, credit)::text FROM customers ORDER BY id"
    ),
)

MAPPED = Pair(
    name="mapped",
    erp_schema=ERP_SCHEMA,
    shop_schema=SHOP_SCHEMA,
    erp_tables={
        "public.clients": {
            "entity": "customer",
            "key": ["client_no"],
            "sor": "local",
            "fields": {
                "number": "client_no",
                "name": "full_name",
                "active": {"column": "state", "map": {"A": True, "I": False}},
                "email": "mail",
                "credit": "credit",
            },
        }
    },
    shop_tables={
        "public.customers": {
            "entity": "customer",
            "key": ["id"],
            "xref": ["number"],
            "sor": "peer",
            "fields": {"name": "name", "active": "active", "email": "email", "credit": "credit"},
        }
    },
    insert="INSERT INTO clients SELECT {values}",
    update=(
        "UPDATE clients SET state = CASE state WHEN 'A' THEN 'I' ELSE 'A' END, "
        "credit = credit + 1000.000001 WHERE client_no BETWEEN %s AND %s"
    ),
    erp_rows=(
        "SELECT row(client_no, full_name, state = 'A', mail, credit)::text "
        "FROM clients ORDER BY client_no"
    ),
    # Each shop row through the cross-reference back to the ERP's number; a row without
    # exactly one cross-reference entry shows as a difference.
    shop_rows=(
        "SELECT row((x.entity_key ->> 'number')::bigint, c.name, c.active, c.email, "
        "c.credit)::text "
        "FROM customers c "
        "LEFT JOIN cdc_bridge.entity_xref x "
        "ON x.entity = 'customer' AND x.local_key = jsonb_build_object('id', c.id) "
        "ORDER BY (x.entity_key ->> 'number')::bigint"
    ),
    xref=True,
)

# The same values for both pairs: 30-odd character names and emails, a third inactive,
# credit with 14 integer digits and 6 decimals.
VALUES = (
    "g, 'Customer ' || g || ' of the bench', CASE WHEN g %% 3 = 0 THEN 'I' ELSE 'A' END, "
    "'customer' || g || '@example.com', "
    "((g::numeric * 7919) %% 100000000000000) + 0.123456 "
    "FROM generate_series(%s::bigint, %s::bigint) AS g"
)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])




class Bench:
    def __init__(self, admin: str, workdir: Path, args: argparse.Namespace) -> None:
        self.admin = admin
        self.workdir = workdir
        self.args = args
        self.runs = 0

    @contextlib.contextmanager
    def database(self, label: str, schema: str) -> Iterator[str]:
        name = f"cdcb_mapbench_{os.getpid()}_{self.runs}_{label}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = make_conninfo(self.admin, dbname=name)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(schema.encode())
            yield dsn
        finally:
            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(name)
                    )
                )

    def config(self, side: str, dsn: str, ports: dict[str, int], tables: dict[str, Any]) -> Path:
        peer = "shop" if side == "erp" else "erp"
        data = {
            "system": side,
            "database": {"url": dsn},
            "inbound": {"listen": f"127.0.0.1:{ports[side]}"},
            "peer": {"name": peer, "url": f"http://127.0.0.1:{ports[peer]}", "secret": SECRET},
            "relay": {"batch_size": BATCH, "metrics_listen": None, "poll_interval_s": 1},
            "logging": {"level": "WARNING"},
            "tables": tables,
        }
        text = yaml.safe_dump(data, sort_keys=False)
        path = self.workdir / f"{side}-{self.runs}.yaml"
        path.write_text(text)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(render_install(parse_config(text, str(path), {})))
        return path

    def start(self, config: Path, command: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "cdc_bridge", "--config", str(config), command],
            env={**os.environ, "BRIDGE_SECRET": SECRET},
            cwd=self.workdir,  # not the source tree: PYTHONPATH may name another one
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def run(self, pair: Pair) -> Measured:
        """One measurement; exits if the shop differs from the ERP."""
        self.runs += 1
        ports = {"erp": free_port(), "shop": free_port()}
        with (
            self.database("erp", pair.erp_schema) as erp,
            self.database("shop", pair.shop_schema) as shop,
        ):
            erp_config = self.config("erp", erp, ports, pair.erp_tables)
            shop_config = self.config("shop", shop, ports, pair.shop_tables)
            serve = self.start(shop_config, "serve")
            relay = None
            try:
                wait("the shop's serve", lambda: listening(ports["shop"]), 60)
                relay = self.start(erp_config, "run")
                with psycopg.connect(erp, autocommit=True) as conn:
                    conn.execute(pair.insert.format(values=VALUES).encode(), (0, 0))
                    wait("the relay to lead", lambda: not pending(conn), 120)
                    relay.send_signal(signal.SIGSTOP)
                    changes = self.write(conn, pair)
                    clocks = Clocks(conn, [erp, shop], relay.pid, serve.pid)
                    relay.send_signal(signal.SIGCONT)
                    started = time.perf_counter()
                    done = wait("the ERP's outbox to drain", lambda: not pending(conn))
                    cpu = clocks.spent()
            finally:
                if relay is not None:
                    stop(relay)
                stop(serve)
            verify(pair, erp, shop, self.args.customers + 1)
        return Measured(changes / (done - started), changes, *(1e6 * c / changes for c in cpu))

    def write(self, conn: psycopg.Connection[Any], pair: Pair) -> int:
        """The inserts, then the updates, in transactions of --per-txn rows; changes made."""
        step, customers = self.args.per_txn, self.args.customers
        insert = pair.insert.format(values=VALUES).encode()
        with conn.pipeline() as pipeline:
            for first in range(1, customers + 1, step):
                conn.execute(insert, (first, min(first + step - 1, customers)))
                pipeline.sync()
            # Updates spread over the table: every other block of --per-txn rows.
            updated = 0
            first = 1
            while updated < self.args.updates and first <= customers:
                last = min(first + step - 1, customers, first + self.args.updates - updated - 1)
                conn.execute(pair.update.encode(), (first, last))
                pipeline.sync()
                updated += last - first + 1
                first += 2 * step
        outbox = conn.execute("SELECT count(*) FROM cdc_bridge.outbox").fetchone()
        assert outbox is not None
        return int(outbox[0])


@dataclass(frozen=True)
class Measured:
    rate: float  # changes/s
    changes: int
    # CPU microseconds per change in the timed window: the ERP's relay, the shop's serve,
    # and the PostgreSQL backends of each database (the bench's own poller left out).
    relay_us: float
    serve_us: float
    erp_pg_us: float
    shop_pg_us: float

    @property
    def cpu_us(self) -> float:
        return self.relay_us + self.serve_us + self.erp_pg_us + self.shop_pg_us


class Clocks:
    """CPU spent from now on by the relay, serve and each database's backends. The
    backends are read from /proc: a server on another host counts as 0."""

    def __init__(
        self, conn: psycopg.Connection[Any], dsns: list[str], relay: int, serve: int
    ) -> None:
        self.conn, self.relay, self.serve = conn, relay, serve
        self.databases = [conninfo_to_dict(dsn)["dbname"] for dsn in dsns]
        self.start = (cpu_seconds(relay), cpu_seconds(serve), self._backends())

    def _backends(self) -> dict[int, tuple[str, float]]:
        rows = self.conn.execute(
            "SELECT pid, datname FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = ANY(%s)",
            (self.databases,),
        ).fetchall()
        return {pid: (name, cpu_seconds(pid)) for pid, name in rows}

    def spent(self) -> tuple[float, ...]:
        """CPU seconds of the relay, serve, and each database's backends, in order."""
        relay, serve, backends = self.start
        per_database = dict.fromkeys(self.databases, 0.0)
        for pid, (name, now) in self._backends().items():
            per_database[name] += max(0.0, now - backends.get(pid, (name, 0.0))[1])
        return (
            cpu_seconds(self.relay) - relay,
            cpu_seconds(self.serve) - serve,
            *per_database.values(),
        )


def pending(conn: psycopg.Connection[Any]) -> bool:
    """Whether the outbox still holds a change."""
    row = conn.execute("SELECT EXISTS (SELECT FROM cdc_bridge.outbox)").fetchone()
    return bool(row and row[0])


def verify(pair: Pair, erp: str, shop: str, rows: int) -> None:
    """The shop holds exactly the ERP's rows, and nothing failed; else exit loudly."""
    with psycopg.connect(erp, autocommit=True) as conn:
        failed = conn.execute("SELECT count(*), min(reason) FROM cdc_bridge.failed").fetchone()
        sent = [r[0] for r in conn.execute(pair.erp_rows.encode())]
    with psycopg.connect(shop, autocommit=True) as conn:
        held = [r[0] for r in conn.execute(pair.shop_rows.encode())]
        if pair.xref:
            xrefs = conn.execute(
                "SELECT count(*) FROM cdc_bridge.entity_xref WHERE entity = 'customer'"
            ).fetchone()
            if xrefs is None or xrefs[0] != rows:
                raise SystemExit(f"{pair.name}: {xrefs} cross-references for {rows} rows")
    if failed is None or failed[0]:
        raise SystemExit(f"{pair.name}: failed changes at the ERP: {failed}")
    if len(sent) != rows or sent != held:
        wrong = next(
            (i for i, (a, b) in enumerate(zip(sent, held, strict=False)) if a != b), None
        )
        sample = (
            "" if wrong is None else f"; first difference: ERP {sent[wrong]} shop {held[wrong]}"
        )
        raise SystemExit(
            f"{pair.name}: the shop differs from the ERP: {len(sent)} ERP rows, "
            f"{len(held)} shop rows (expected {rows}){sample}"
        )


@contextlib.contextmanager
def admin_dsn(dsn: str | None) -> Iterator[tuple[str, str]]:
    if dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        yield dsn, f"PostgreSQL {version[0] if version else '?'} at {dsn}"
        return
    with EmbeddedPostgres() as server:
        yield server.dsn, "embedded PostgreSQL 18 (fsync off)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--customers", type=int, default=20_000, help="inserted rows")
    parser.add_argument("--updates", type=int, default=10_000, help="updated rows")
    parser.add_argument("--per-txn", type=int, default=10, help="rows per source transaction")
    parser.add_argument("--dsn", help="an admin DSN (default: an embedded PostgreSQL 18)")
    args = parser.parse_args()
    if args.updates > args.customers:
        parser.error("--updates may not exceed --customers")
    with (
        admin_dsn(args.dsn) as (admin, server),
        tempfile.TemporaryDirectory(prefix="cdc-bridge-bench-") as tmp,
    ):
        bench = Bench(admin, Path(tmp), args)
        print(
            f"{server}; {args.customers} inserts + {args.updates} updates in transactions "
            f"of {args.per_txn} rows, relay batch {BATCH}, load average {load_average()}"
        )
        runs: dict[str, list[Measured]] = {UNMAPPED.name: [], MAPPED.name: []}
        for round_ in range(1, args.rounds + 1):
            order = (UNMAPPED, MAPPED) if round_ % 2 else (MAPPED, UNMAPPED)
            for pair in order:
                m = bench.run(pair)
                runs[pair.name].append(m)
                print(
                    f"round {round_} {pair.name:8}: {m.rate:6,.0f} changes/s, CPU us/change "
                    f"{cpu_text(m)} ({m.changes} changes, shop equal to the ERP; "
                    f"load {load_average()})",
                    flush=True,
                )
    summary(runs)
    print(f"load average at the end {load_average()}")


def cpu_text(m: Measured) -> str:
    return (
        f"relay {m.relay_us:.0f} serve {m.serve_us:.0f} PostgreSQL ERP {m.erp_pg_us:.0f} "
        f"shop {m.shop_pg_us:.0f}, total {m.cpu_us:.0f}"
    )


def summary(runs: dict[str, list[Measured]]) -> None:
    def median(name: str, of: Callable[[Measured], float]) -> float:
        return statistics.median(of(m) for m in runs[name])

    for name in runs:
        middle = Measured(
            median(name, lambda m: m.rate),
            0,
            median(name, lambda m: m.relay_us),
            median(name, lambda m: m.serve_us),
            median(name, lambda m: m.erp_pg_us),
            median(name, lambda m: m.shop_pg_us),
        )
        print(
            f"median {name:8}: {middle.rate:6,.0f} changes/s, CPU us/change "
            f"{cpu_text(middle)} (medians of each)"
        )
    ratio = median(MAPPED.name, lambda m: m.rate) / median(UNMAPPED.name, lambda m: m.rate)
    cost = median(UNMAPPED.name, lambda m: m.cpu_us) / median(MAPPED.name, lambda m: m.cpu_us)
    print(
        f"throughput ratio mapped/unmapped {ratio:.2f} (target >= {TARGET}: "
        f"{'met' if ratio >= TARGET else 'missed'}); CPU per change unmapped/mapped {cost:.2f}"
    )


if __name__ == "__main__":
    main()
