"""The live outbox stays bounded: capture N changes while a real relay ships them.

Usage:
    .venv/bin/python bench/outbox_size/run.py [--changes 1000000] [--chunk 2000] [--rate 10000]

Inserts N rows into public.customers (captured, whole-row) in chunks of INSERT ... SELECT
generate_series, paced at --rate changes/s (a steady state the relay keeps up with), while
`cdc-bridge run` (a real process, batch 2000) ships them to a minimal acking peer in this
process. Samples the outbox's size during the run, then reports pg_total_relation_size of
the outbox after delivery (the relay rotates it every relay.rotate_interval_s) and after
VACUUM, and the size of `delivered` (the history kept
for relay.delivered_retention_days).

Uses $CDC_BRIDGE_BENCH_DSN (a server where it may create and drop a database), or an
embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import psycopg
import yaml

from bench.common import bench_database, server
from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CLI = str(Path(sys.executable).parent / "cdc-bridge")
SECRET = "bench-secret"


class _AckingPeer(BaseHTTPRequestHandler):
    """Acknowledges every change as applied; keeps nothing (no signature check either)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        changes = orjson.loads(body)["changes"]
        answer = orjson.dumps(
            {
                "protocol": "cdc-bridge/1",
                "results": [
                    {"idempotency_key": c["idempotency_key"], "status": "applied"} for c in changes
                ],
            }
        )
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def acking_peer() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AckingPeer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_config(dsn: str, peer_url: str, path: Path) -> Path:
    data = yaml.safe_load((FIXTURES / "erp.yaml").read_text())
    data["database"]["url"] = dsn
    data["peer"].update({"url": peer_url, "secret": SECRET})
    data["relay"] = {"batch_size": 2000, "max_wait_ms": 20, "metrics_listen": None}
    path.write_text(yaml.safe_dump(data))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((FIXTURES / "schema.sql").read_text())
        conn.execute(render_install(parse_config(path.read_text(), path.name, {})))
    return path


def sizes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute(
        # The outbox's size is its own and that of the two tables that inherit it.
        "SELECT (SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(ARRAY["
        "'cdc_bridge.outbox', 'cdc_bridge.outbox_0', 'cdc_bridge.outbox_1']) t),"
        " (SELECT count(*) FROM cdc_bridge.outbox),"
        " pg_total_relation_size('cdc_bridge.delivered'),"
        " (SELECT count(*) FROM cdc_bridge.delivered)"
    ).fetchone()
    assert row is not None
    return dict(zip(("outbox", "outbox_rows", "delivered", "delivered_rows"), row, strict=True))


def capture(dsn: str, changes: int, chunk: int, rate: float, peak: dict[str, int]) -> float:
    """Insert in chunks, paced at `rate` changes/s (steady state: below the relay's speed)."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(1, changes + 1, chunk):
            due = started + (start - 1) / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            end = min(start + chunk - 1, changes)
            conn.execute(
                "INSERT INTO customers SELECT i, 'customer ' || i, i || '@example.com', 'gold' "
                "FROM generate_series(%s::bigint, %s) AS i",
                (start, end),
            )
            now = sizes(conn)
            peak["outbox"] = max(peak["outbox"], now["outbox"])
            peak["outbox_rows"] = max(peak["outbox_rows"], now["outbox_rows"])
    return time.perf_counter() - started


def wait_drained(dsn: str, peak: dict[str, int], timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            now = sizes(conn)
            peak["outbox"] = max(peak["outbox"], now["outbox"])
            if now["outbox_rows"] == 0:
                return
            time.sleep(0.5)
    raise SystemExit("the outbox did not drain in time")


def relay_ready(dsn: str, peak: dict[str, int]) -> None:
    """One probe change delivered: the relay is up before the clock starts."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO customers VALUES (0, 'probe')")
    wait_drained(dsn, peak, timeout=120)


def mib(size: int) -> str:
    return f"{size / 1024 / 1024:8.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=10_000, help="changes/s to capture")
    args = parser.parse_args()
    peak = {"outbox": 0, "outbox_rows": 0}
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"cdcb_bench_outbox_{os.getpid()}"
    work.mkdir(exist_ok=True)
    with server() as admin, bench_database(admin, "outbox") as dsn, acking_peer() as peer_url:
        config = write_config(dsn, peer_url, work / "erp.yaml")
        with open(work / "run.log", "wb") as log:
            relay = subprocess.Popen([CLI, "--config", str(config), "run"], stdout=log, stderr=log)
        try:
            relay_ready(dsn, peak)
            started = time.perf_counter()
            capture_s = capture(dsn, args.changes, args.chunk, args.rate, peak)
            wait_drained(dsn, peak)
            total_s = time.perf_counter() - started
        finally:
            relay.terminate()
            relay.wait(60)
        with psycopg.connect(dsn, autocommit=True) as conn:
            delivered = sizes(conn)
            conn.execute("VACUUM cdc_bridge.outbox")
            vacuumed = sizes(conn)
            conn.execute("VACUUM FULL cdc_bridge.outbox")
            full = sizes(conn)
    print(
        f"{args.changes:,} changes captured in {capture_s:.1f}s, all delivered after {total_s:.1f}s"
    )
    print(
        f"outbox peak during the run  {mib(peak['outbox'])}  ({peak['outbox_rows']:,} rows at most)"
    )
    print(f"outbox after delivery       {mib(delivered['outbox'])}  (0 rows)")
    print(f"outbox after VACUUM         {mib(vacuumed['outbox'])}")
    print(f"outbox after VACUUM FULL    {mib(full['outbox'])}")
    print(
        f"delivered (history)         {mib(full['delivered'])}  ({full['delivered_rows']:,} rows)"
    )


if __name__ == "__main__":
    main()
