"""End-to-end relay bench: commit -> peer acknowledgement, vs a bare read+POST ceiling.

    .venv/bin/python bench/relay/bench_relay.py [--changes 50000] [--seconds 10]

On an embedded PostgreSQL 18 (fsync off), with a minimal acking peer in its own process
(bench/relay/peer.py) and `cdc-bridge run` as a real process. For each batch size:
  relay:   N changes committed in one transaction, then the time until the relay has
           acknowledged all of them (outbox empty, rows in `delivered`): changes/s;
  ceiling: the same N rows read by keyset and POSTed as the same JSON batches, with no
           bookkeeping at all.
Then commit -> peer latency (p50/p99) with one change per transaction at ~1k/s.
CPU seconds of the relay, PostgreSQL and the peer are read from /proc for each run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import yaml

from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config
from cdc_bridge.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "cdc-bridge")
SECRET = "bench-secret"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def postgres_pids(postmaster: int) -> list[int]:
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat[1]) == postmaster:
                pids.append(int(entry.name))
    return pids


def config_yaml(dsn: str, peer_url: str, batch_size: int) -> str:
    data = yaml.safe_load((ROOT / "tests" / "fixtures" / "erp.yaml").read_text())
    data["database"]["url"] = dsn
    data["peer"].update({"url": peer_url, "secret": SECRET})
    data["relay"] = {
        "batch_size": batch_size,
        "concurrency": 4,
        "poll_interval_s": 1,
        "metrics_listen": None,
    }
    data["logging"] = {"level": "WARNING"}
    return yaml.safe_dump(data)


def scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def wait_empty(conn: psycopg.Connection[Any], timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    # EXISTS, not count(*): the poll must not take CPU from the relay and PostgreSQL.
    while scalar(conn, "SELECT EXISTS (SELECT FROM cdc_bridge.outbox)"):
        if time.monotonic() > deadline:
            raise RuntimeError("the relay did not drain the outbox")
        time.sleep(0.002)
    return time.perf_counter()


class Bench:
    def __init__(self, server: EmbeddedPostgres, args: argparse.Namespace) -> None:
        self.server = server
        self.args = args
        self.dsn = server.dsn
        self.next_id = 1
        self.peer_port = free_port()
        self.peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
        self.peer = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "relay" / "peer.py"), str(self.peer_port)]
        )
        assert server._process is not None
        self.postmaster = server._process.pid

    def install(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute((ROOT / "tests" / "fixtures" / "schema.sql").read_text())
            config = parse_config(config_yaml(self.dsn, self.peer_url, 500), "bench", {})
            conn.execute(render_install(config))

    def start_relay(self, batch_size: int) -> subprocess.Popen[bytes]:
        path = self.workdir / f"relay-{batch_size}.yaml"
        path.write_text(config_yaml(self.dsn, self.peer_url, batch_size))
        relay = subprocess.Popen([CLI, "--config", str(path), "run"])
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self.insert(conn, 1)  # warm-up: the relay is leading once this is acknowledged
            wait_empty(conn, timeout=60)
        return relay

    def insert(self, conn: psycopg.Connection[Any], count: int) -> float:
        first, self.next_id = self.next_id, self.next_id + count
        conn.execute(
            "INSERT INTO customers SELECT g, 'name ' || g, 'x@example.com', 'gold' "
            "FROM generate_series(%s::bigint, %s::bigint) g",
            (first, first + count - 1),
        )
        return time.perf_counter()

    def relay_run(self, batch_size: int) -> dict[str, float]:
        relay = self.start_relay(batch_size)
        pg = postgres_pids(self.postmaster)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cpu0 = (cpu_seconds([relay.pid]), cpu_seconds(pg), cpu_seconds([self.peer.pid]))
            committed = self.insert(conn, self.args.changes)
            done = wait_empty(conn)
            cpu1 = (cpu_seconds([relay.pid]), cpu_seconds(pg), cpu_seconds([self.peer.pid]))
        relay.terminate()
        relay.wait(30)
        elapsed = done - committed
        return {
            "rate": self.args.changes / elapsed,
            "relay_cpu": (cpu1[0] - cpu0[0]) / elapsed,
            "pg_cpu": (cpu1[1] - cpu0[1]) / elapsed,
            "peer_cpu": (cpu1[2] - cpu0[2]) / elapsed,
        }

    def ceiling_run(self, batch_size: int) -> tuple[float, float]:
        """Keyset read + the same JSON + POST, nothing recorded: the upper bound."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE cdc_bridge.outbox")
            self.insert(conn, self.args.changes)
            started, cpu_started = time.perf_counter(), time.process_time()
            sent, last = 0, 0
            with httpx.Client(base_url=self.peer_url) as http:
                while True:
                    rows = conn.execute(
                        "SELECT id, txid::text, table_name, op, key, fields, captured_at, origin "
                        "FROM cdc_bridge.outbox WHERE id > %s ORDER BY id LIMIT %s",
                        (last, batch_size),
                    ).fetchall()
                    if not rows:
                        break
                    http.post("/v1/batches", content=_bare_batch(rows))
                    sent += len(rows)
                    last = rows[-1][0]
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            conn.execute("TRUNCATE cdc_bridge.outbox")
        assert sent == self.args.changes
        return sent / elapsed, cpu / elapsed

    def latency_run(self) -> tuple[float, float, int]:
        relay = self.start_relay(500)
        commits: dict[int, float] = {}
        first = self.next_id
        count = int(self.args.seconds * 1000)
        self.next_id += count

        def write() -> None:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                start = time.perf_counter()
                for i in range(count):
                    pause = start + i / 1000 - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    conn.execute("INSERT INTO customers VALUES (%s, 'l', NULL, NULL)", (first + i,))
                    commits[first + i] = time.time()

        writer = threading.Thread(target=write)
        writer.start()
        writer.join()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            wait_empty(conn)
            delivered = conn.execute(
                "SELECT txid::text, id, (key->>'id')::bigint FROM cdc_bridge.delivered "
                "WHERE (key->>'id')::bigint >= %s AND op = 'I'",
                (first,),
            ).fetchall()
        relay.terminate()
        relay.wait(30)
        arrivals = httpx.get(f"{self.peer_url}/stats").json()
        latencies = sorted(
            (arrivals[f"erp:{txid}:{oid}"] - commits[cid]) * 1000 for txid, oid, cid in delivered
        )
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        return p50, p99, len(latencies)


def _bare_batch(rows: list[tuple[Any, ...]]) -> bytes:
    return orjson.dumps(
        {
            "protocol": "cdc-bridge/1",
            "source": "erp",
            "batch_id": f"bare-{rows[0][0]}",
            "changes": [
                {
                    "idempotency_key": f"erp:{r[1]}:{r[0]}",
                    "table": r[2],
                    "op": {"I": "insert", "U": "update", "D": "delete"}[r[3]],
                    "key": r[4],
                    "fields": r[5],
                    "committed_at": r[6],
                    "origin": r[7],
                }
                for r in rows
            ],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="latency run length")
    parser.add_argument("--batch-sizes", default="100,500,2000")
    parser.add_argument(
        "--latency-only", action="store_true", help="only the commit -> peer latency run"
    )
    args = parser.parse_args()
    with EmbeddedPostgres() as server:
        bench = Bench(server, args)
        try:
            bench.install()
            if not args.latency_only:
                throughput(bench, args)
            p50, p99, n = bench.latency_run()
            print(
                f"latency commit -> peer at ~1k changes/s ({n} changes, batch 500, "
                f"max_wait_ms 20, the default): p50 {p50:.1f} ms, p99 {p99:.1f} ms"
            )
        finally:
            bench.peer.terminate()
            bench.peer.wait(10)


def throughput(bench: Bench, args: argparse.Namespace) -> None:
    """Relay against the bare read+POST ceiling, per batch size (one table)."""
    print(f"{args.changes} changes per run, concurrency 4, embedded PostgreSQL 18")
    print(
        "| batch | relay changes/s | bare read+POST changes/s | ratio "
        "| CPU relay / PG / peer (cores) | CPU bare loop (cores) |"
    )
    print("|---:|---:|---:|---:|---|---:|")
    for size in (int(s) for s in args.batch_sizes.split(",")):
        relay = bench.relay_run(size)
        ceiling, ceiling_cpu = bench.ceiling_run(size)
        print(
            f"| {size} | {relay['rate']:,.0f} | {ceiling:,.0f} | "
            f"{relay['rate'] / ceiling:.2f} | {relay['relay_cpu']:.2f} / "
            f"{relay['pg_cpu']:.2f} / {relay['peer_cpu']:.2f} | {ceiling_cpu:.2f} |",
            flush=True,
        )
    print()


if __name__ == "__main__":
    main()
