"""Outbound REST bench: the relay shipping products to an API, vs the API's bare rate.

    .venv/bin/python bench/rest/bench_rest.py [--changes 10000] [--repeat 3]

On $CDC_BRIDGE_BENCH_DSN or an embedded PostgreSQL 18, against a minimal API in its own
process (bench/rest/api.py, 200 to everything). For request concurrency 1 and 8:
  bare:  the same number of PUT requests with the same HTTP client library (aiohttp,
         keep-alive, TCP_NODELAY), the same JSON body and URLs built the same way, sent by
         C workers that each take the next request when their last is answered (as the
         relay's REST endpoint does), nothing read or recorded: the rate the server and
         client allow;
  relay: `cdc-bridge run` (REST adapter, peer.rate_limit.concurrency = C), stopped
         (SIGSTOP) while N new products are written, then let go (SIGCONT): changes/s
         until the outbox is empty. Two workloads: `small`, the N products in
         transactions of 10 (what an application writes), and `bulk`, all N in one
         transaction (an import).
The ratio relay / bare is printed per concurrency and workload, median of the repetitions,
with the CPU per change of the relay and per request of the bare loop (from /proc).

    .venv/bin/python bench/rest/bench_rest.py --own-work

runs the same relay workloads against a peer that answers at once without any I/O
(bench/rest/null_peer.py): the relay's own CPU per change, with no HTTP client work.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import yaml
from yarl import URL

from bench.common import bench_database, server
from bench.transactions import cpu_seconds
from cdc_bridge.capture.render import render_install
from cdc_bridge.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "cdc-bridge")
RUNS = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_yaml(dsn: str, api_url: str, concurrency: int) -> str:
    data = {
        "system": "erp",
        "database": {"url": dsn},
        "peer": {
            "name": "shop",
            "url": api_url,
            "adapter": "rest",
            "rate_limit": {"concurrency": concurrency},
        },
        "relay": {"batch_size": 500, "concurrency": 4, "metrics_listen": None,
                  "poll_interval_s": 1},
        "logging": {"level": "WARNING"},
        "tables": {
            "public.products": {
                "key": ["sku"],
                "sor": "local",
                "rest": {
                    "insert": "PUT /api/products/{sku}",
                    "update": "PUT /api/products/{sku}",
                    "delete": "DELETE /api/products/{sku}",
                },
            }
        },
    }
    return yaml.safe_dump(data)


async def bare(api_url: str, count: int, concurrency: int) -> float:
    body = orjson.dumps({"sku": "P-000001", "name": "name", "price": 12.5,
                         "description": "d", "stock": 3})
    numbers = iter(range(count))
    base = URL(api_url)
    async with aiohttp.ClientSession() as http:  # aiohttp sets TCP_NODELAY itself

        async def worker() -> None:
            # A worker per request slot: a task per request, queued on a semaphore, cost
            # the loop a tenth of its rate (10,000 tasks waiting on one lock). Each URL is
            # the base's with a new path, as the relay builds it (a URL string parsed
            # again at every request costs about 2 us).
            for i in numbers:
                async with http.put(
                    base.with_path(f"/api/products/P-{i:06d}", encoded=True), data=body,
                    headers={"content-type": "application/json"},
                ) as response:
                    await response.read()
                    response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


WORKLOADS = {"small": 10, "bulk": None}  # rows per transaction (None: all in one)


def relay(
    dsn: str,
    api_url: str,
    count: int,
    concurrency: int,
    per_txn: int | None,
    workdir: Path,
    command: list[str] | None = None,
) -> tuple[float, float]:
    """changes/s and relay CPU us per change, from SIGCONT until the outbox is empty."""
    path = workdir / f"rest-{concurrency}.yaml"
    path.write_text(config_yaml(dsn, api_url, concurrency))
    run = next(RUNS)  # new SKUs each run: synced tables refuse TRUNCATE
    with psycopg.connect(dsn, autocommit=True) as conn:
        process = subprocess.Popen([*(command or [CLI]), "--config", str(path), "run"])
        try:
            conn.execute("INSERT INTO products VALUES (%s, 'w', 1, 'd', 1)", (f"warm-{run}",))
            wait_empty(conn)
            process.send_signal(signal.SIGSTOP)
            step = per_txn or count
            for first in range(1, count + 1, step):
                conn.execute(
                    "INSERT INTO products SELECT %s || g, 'name', 12.50, 'd', 3 "
                    "FROM generate_series(%s::int, %s::int) g",
                    (f"R{run}-", first, min(count, first + step - 1)),
                )
            cpu = cpu_seconds(process.pid)
            started = time.perf_counter()
            process.send_signal(signal.SIGCONT)
            wait_empty(conn)
            elapsed = time.perf_counter() - started
            return count / elapsed, (cpu_seconds(process.pid) - cpu) / count * 1e6
        finally:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            process.wait(30)


def wait_empty(conn: psycopg.Connection[Any], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while conn.execute("SELECT EXISTS (SELECT FROM cdc_bridge.outbox)").fetchone() != (False,):
        if time.monotonic() > deadline:
            raise RuntimeError("the relay did not drain the outbox")
        time.sleep(0.005)


def own_work(dsn: str, api_url: str, args: argparse.Namespace, workdir: Path) -> None:
    null_peer = [sys.executable, str(ROOT / "bench" / "rest" / "null_peer.py")]
    print(f"{args.changes} changes, {args.repeat} repetitions (median), a peer that answers "
          "without I/O: the relay's own work")
    print(f"{'workload':>8} {'changes/s':>10} {'CPU us/change':>14}")
    for workload, per_txn in WORKLOADS.items():
        runs = [relay(dsn, api_url, args.changes, 8, per_txn, workdir, null_peer)
                for _ in range(args.repeat)]
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{workload:>8} {rate:>10.0f} {cpu:>14.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--own-work", action="store_true",
                        help="the relay against a peer that answers without I/O")
    args = parser.parse_args()
    port = free_port()
    api = subprocess.Popen([sys.executable, str(ROOT / "bench" / "rest" / "api.py"), str(port)])
    api_url = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="rest-bench-"))
    try:
        time.sleep(0.5)
        with server() as admin, bench_database(admin, "rest") as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute((ROOT / "tests" / "fixtures" / "schema.sql").read_text())
                config = parse_config(config_yaml(dsn, api_url, 8), "bench", {})
                conn.execute(render_install(config))
            if args.own_work:
                own_work(dsn, api_url, args, workdir)
                return
            print(f"{args.changes} changes, {args.repeat} repetitions (median); rates per "
                  "second, CPU in us per request (bare) or change (relay)")
            print(f"{'concurrency':>11} {'workload':>8} {'bare':>7} {'relay':>7} {'ratio':>6} "
                  f"{'bare CPU':>9} {'relay CPU':>9}")
            for concurrency in (1, 8):
                bares: list[tuple[float, float]] = []
                relays: dict[str, list[tuple[float, float]]] = {w: [] for w in WORKLOADS}
                for _ in range(args.repeat):  # alternate, so drift hits all alike
                    cpu = own_cpu()
                    rate = asyncio.run(bare(api_url, args.changes, concurrency))
                    bares.append((rate, (own_cpu() - cpu) / args.changes * 1e6))
                    for workload, per_txn in WORKLOADS.items():
                        relays[workload].append(
                            relay(dsn, api_url, args.changes, concurrency, per_txn, workdir)
                        )
                b = statistics.median(r for r, _ in bares)
                b_cpu = statistics.median(c for _, c in bares)
                for workload, runs in relays.items():
                    r = statistics.median(x for x, _ in runs)
                    r_cpu = statistics.median(c for _, c in runs)
                    print(f"{concurrency:>11} {workload:>8} {b:>7.0f} {r:>7.0f} {r / b:>6.2f} "
                          f"{b_cpu:>9.0f} {r_cpu:>9.0f}")
    finally:
        api.terminate()
        api.wait(10)


if __name__ == "__main__":
    main()
