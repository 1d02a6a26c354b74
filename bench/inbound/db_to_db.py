"""DB -> DB: changes per second from commits in the ERP to rows applied in the shop.

Both databases and both bridges (`run` + `serve` for each side, as subprocesses) on this
machine, at relay batch size 500. The ERP inserts N customers (`sor: local` there, `peer`
in the shop) in transactions of 5,000; the clock runs from the first insert until the
shop holds all N rows. In the same run, the ceiling: the same N rows inserted straight
into the shop's table by one bare INSERT per 5,000 rows (no capture, no bridge).

    .venv/bin/python bench/inbound/db_to_db.py [--changes 50000] [--fsync]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config
from cdc_bridge.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SECRET = "bench-secret"
TARGET = 10_000
CHUNK = 5_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config_text(fixture: str, dsn: str, listen: int, peer: int, metrics: int) -> str:
    text = (FIXTURES / fixture).read_text()
    for variable in ("${ERP_DATABASE_URL}", "${SHOP_DATABASE_URL}"):
        text = text.replace(variable, dsn)
    own, other = ("8081", "8082") if fixture == "erp_pair.yaml" else ("8082", "8081")
    text = text.replace(f'listen: "127.0.0.1:{own}"', f'listen: "127.0.0.1:{listen}"')
    text = text.replace(f'url: "http://127.0.0.1:{other}"', f'url: "http://127.0.0.1:{peer}"')
    return text + f'relay: {{metrics_listen: "127.0.0.1:{metrics}", batch_size: 500}}\n'


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait(what: str, check: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


@contextlib.contextmanager
def two_bridges(admin: str, workdir: Path) -> Iterator[tuple[str, str]]:
    ports = {side: (free_port(), free_port()) for side in ("erp", "shop")}
    dsns: dict[str, str] = {}
    configs: dict[str, Path] = {}
    with psycopg.connect(admin, autocommit=True) as conn:
        for side in ("erp", "shop"):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(side)))
            dsns[side] = psycopg.conninfo.make_conninfo(admin, dbname=side)
    for side, fixture, other in (("erp", "erp_pair.yaml", "shop"), ("shop", "shop.yaml", "erp")):
        text = config_text(fixture, dsns[side], ports[side][0], ports[other][0], ports[side][1])
        configs[side] = workdir / f"{side}.yaml"
        configs[side].write_text(text)
        with psycopg.connect(dsns[side], autocommit=True) as conn:
            conn.execute((FIXTURES / "schema.sql").read_text().encode())
            conn.execute(render_install(parse_config(text, side, {"BRIDGE_SECRET": SECRET})))
    env = {**os.environ, "BRIDGE_SECRET": SECRET}
    processes: list[subprocess.Popen[bytes]] = []

    def start(side: str, command: str) -> None:
        args = [sys.executable, "-m", "cdc_bridge", "--config", str(configs[side]), command]
        processes.append(
            subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    try:
        for side in ("erp", "shop"):
            start(side, "serve")
        for side in ("erp", "shop"):
            wait(f"{side} serve", lambda p=ports[side][0]: listening(p))
        for side in ("erp", "shop"):
            start(side, "run")
        for side in ("erp", "shop"):
            wait(f"{side} relay", lambda p=ports[side][1]: listening(p))
        yield dsns["erp"], dsns["shop"]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)


def insert_customers(dsn: str, count: int, table: str = "customers") -> None:
    """`count` customer rows, one transaction per CHUNK."""
    statement = sql.SQL(
        "INSERT INTO {} SELECT i, 'Customer ' || i, 'c' || i || '@example.com', 'std' "
        "FROM generate_series(%s::bigint, %s::bigint) AS i"
    ).format(sql.Identifier(table))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, count, CHUNK):
            conn.execute(statement, (start + 1, min(start + CHUNK, count)))


def count(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM customers").fetchone()
    return int(row[0]) if row else 0


def ceiling(dsn: str, changes: int) -> float:
    """The same rows into a plain copy of the shop's table: no trigger, no bridge."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ceiling (LIKE customers INCLUDING ALL)")
    started = time.perf_counter()
    insert_customers(dsn, changes, table="ceiling")
    return changes / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--fsync", action="store_true", help="durable commits (slower)")
    args = parser.parse_args()
    with (
        EmbeddedPostgres(fsync=args.fsync) as server,
        tempfile.TemporaryDirectory(prefix="cdc-bridge-bench-") as workdir,
        two_bridges(server.dsn, Path(workdir)) as (erp, shop),
    ):
        started = time.perf_counter()
        insert_customers(erp, args.changes)
        committed = time.perf_counter() - started
        wait("the shop to hold every row", lambda: count(shop) == args.changes, timeout=600)
        elapsed = time.perf_counter() - started
        bare = ceiling(shop, args.changes)
    rate = args.changes / elapsed
    print(f"PostgreSQL 18 (embedded), fsync {'on' if args.fsync else 'off'}, batch 500")
    print(f"{args.changes} changes committed in the ERP in {committed:.2f} s")
    print(f"DB -> DB through both bridges: {elapsed:.2f} s = {rate:,.0f} changes/s")
    print(f"bare INSERT into the shop (ceiling, same run): {bare:,.0f} rows/s")
    print(f"vs target {TARGET:,}/s: {rate / TARGET:.2f}x; vs ceiling: {rate / bare:.2f}x")


if __name__ == "__main__":
    main()
