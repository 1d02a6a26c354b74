"""Changes applied per second by `cdc-bridge serve`, at batch 500, over real HTTP.

A loop POSTs signed batches of product upserts (a per-field table: the capture trigger
records each applied row as the peer's, as in production) to a `cdc-bridge serve`
subprocess. The baseline, in the same run and on the same table, applies the same number
of rows with a bare `INSERT ... ON CONFLICT` executemany, one transaction per 500, no HTTP.

    .venv/bin/python bench/inbound/bench_serve.py [--batches 40] [--dsn postgresql://...]

Without --dsn (or $CDC_BRIDGE_TEST_DSN) it runs an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config
from cdc_bridge.embedded import EmbeddedPostgres
from cdc_bridge.peer.protocol import BATCH_PATH, Batch, Change, Op, Signer, dumps

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SECRET = "bench-secret"
BATCH = 500
TARGET = 10_000
KEYS = {"public.customers": "id", "public.products": "sku"}
TABLE_KIND = {
    "public.customers": "sor peer: whole rows, not captured",
    "public.products": "per-field: each applied row captured as the peer's",
}


@contextlib.contextmanager
def server_dsn(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with EmbeddedPostgres() as embedded:
        yield embedded.dsn


@contextlib.contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    name = "cdcb_bench_inbound_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(admin_dsn, dbname=name)
    try:
        yield dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def row(table: str, i: int) -> dict[str, Any]:
    if table == "public.products":
        return {"sku": f"S{i:08d}", "name": f"Product {i}", "price": i % 1000 + 0.5}
    return {"id": i, "name": f"Customer {i}", "email": f"c{i}@example.com", "tier": None}


def changes(table: str, start: int, count: int) -> list[Change]:
    now = datetime.now(UTC)
    key = KEYS[table]
    return [
        Change(
            idempotency_key=f"bench:{table}:{i}",
            table=table,
            op=Op.INSERT,
            key={key: row(table, i)[key]},
            fields=row(table, i),
            committed_at=now,
            origin="erp",
        )
        for i in range(start, start + count)
    ]


@contextlib.contextmanager
def serve(config_path: Path, port: int) -> Iterator[str]:
    command = [
        str(Path(sys.executable).with_name("cdc-bridge")),
        "--config",
        str(config_path),
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
    ]
    process = subprocess.Popen(command, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("serve did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_serve(url: str, table: str, batches: int, offset: int, senders: int) -> float:
    """POST `batches` signed batches, `senders` at a time (the relay sends concurrently)."""
    signer = Signer(SECRET)
    bodies = [
        (
            f"{table}:b{offset + n}",
            dumps(
                Batch(
                    source="erp",
                    batch_id=f"{table}:b{offset + n}",
                    changes=changes(table, offset + n * BATCH, BATCH),
                )
            ),
        )
        for n in range(batches)
    ]
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(senders) as pool:

        def post(batch: tuple[str, bytes]) -> None:
            batch_id, body = batch
            headers = {**signer.headers(batch_id, body), "content-type": "application/json"}
            client.post(url + BATCH_PATH, content=body, headers=headers).raise_for_status()

        started = time.perf_counter()
        list(pool.map(post, bodies))
        elapsed = time.perf_counter() - started
    return batches * BATCH / elapsed


def run_baseline(dsn: str, table: str, batches: int, offset: int) -> float:
    columns = list(row(table, 0))
    key = KEYS[table]
    query = sql.SQL(
        "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({key}) DO UPDATE SET {set}"
    ).format(
        table=sql.Identifier(*table.split(".")),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        key=sql.Identifier(key),
        set=sql.SQL(", ").join(
            sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in columns if c != key
        ),
    )
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        for n in range(batches):
            params = [
                tuple(row(table, i).values())
                for i in range(offset + n * BATCH, offset + (n + 1) * BATCH)
            ]
            with conn.transaction():
                conn.execute("SELECT set_config('cdc_bridge.origin', 'erp', true)")
                with conn.cursor() as cur:
                    cur.executemany(query, params)
        elapsed = time.perf_counter() - started
    return batches * BATCH / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--dsn", default=os.environ.get("CDC_BRIDGE_TEST_DSN"))
    args = parser.parse_args()
    with (
        server_dsn(args.dsn) as admin,
        fresh_database(admin) as dsn,
        tempfile.TemporaryDirectory() as tmp,
    ):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute((FIXTURES / "schema.sql").read_text())
        text = (FIXTURES / "shop.yaml").read_text()
        config = parse_config(
            text, "shop.yaml", {"SHOP_DATABASE_URL": dsn, "BRIDGE_SECRET": SECRET}
        )
        with psycopg.connect(dsn) as conn:
            conn.execute(render_install(config))
        config_path = Path(tmp) / "shop.yaml"
        config_path.write_text(
            text.replace("${SHOP_DATABASE_URL}", dsn).replace("${BRIDGE_SECRET}", SECRET)
        )
        count = args.batches * BATCH
        served: dict[tuple[str, int], float] = {}
        with serve(config_path, free_port()) as url:
            for table in KEYS:
                served[table, 1] = run_serve(url, table, args.batches, 0, 1)
                served[table, 2] = run_serve(url, table, args.batches, count, 2)
        for table in KEYS:
            baseline = run_baseline(dsn, table, args.batches, offset=2 * count)
            report(table, count, served[table, 1], served[table, 2], baseline)


def report(table: str, count: int, one: float, two: float, baseline: float) -> None:
    print(f"inbound apply: {count} upserts of {table} ({TABLE_KIND[table]}), batch {BATCH}")
    for senders, served in ((1, one), (2, two)):
        verdict = "met" if served >= TARGET else "NOT met"
        print(
            f"  serve, {senders} sender(s), HTTP+signed: {served:>9,.0f} changes/s "
            f"({served / baseline:.2f}x baseline; target {TARGET:,}/s {verdict})"
        )
    print(f"  baseline executemany, no HTTP:    {baseline:>9,.0f} changes/s")


if __name__ == "__main__":
    main()
