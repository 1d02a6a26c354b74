"""Outbound REST bench: the relay shipping products to an API, vs the API's bare rate.

    .venv/bin/python bench/rest/bench_rest.py [--changes 5000] [--repeat 3]

On $CDC_BRIDGE_BENCH_DSN or an embedded PostgreSQL 18, against a minimal API in its own
process (bench/rest/api.py, 200 to everything). For request concurrency 1 and 8:
  bare:  the same number of PUT requests with the same HTTP client library (aiohttp,
         keep-alive, TCP_NODELAY) and the same JSON body, at that concurrency, nothing
         read or recorded: the rate the server and client allow;
  relay: N products inserted in one transaction, then `cdc-bridge run` (REST adapter,
         peer.rate_limit.concurrency = C) until the outbox is empty: changes/s.
The ratio relay / bare is printed per concurrency, median of the repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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

from bench.common import bench_database, server
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
    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as http:  # aiohttp sets TCP_NODELAY itself

        async def one(i: int) -> None:
            async with slots, http.put(
                f"{api_url}/api/products/P-{i:06d}", data=body,
                headers={"content-type": "application/json"},
            ) as response:
                await response.read()
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return count / (time.perf_counter() - started)


def relay(dsn: str, api_url: str, count: int, concurrency: int, workdir: Path) -> float:
    path = workdir / f"rest-{concurrency}.yaml"
    path.write_text(config_yaml(dsn, api_url, concurrency))
    run = next(RUNS)  # new SKUs each run: synced tables refuse TRUNCATE
    with psycopg.connect(dsn, autocommit=True) as conn:
        process = subprocess.Popen([CLI, "--config", str(path), "run"])
        try:
            conn.execute("INSERT INTO products VALUES (%s, 'w', 1, 'd', 1)", (f"warm-{run}",))
            wait_empty(conn)
            started = time.perf_counter()
            conn.execute(
                "INSERT INTO products SELECT %s || g, 'name', 12.50, 'd', 3 "
                "FROM generate_series(1, %s) g",
                (f"R{run}-", count),
            )
            wait_empty(conn)
            return count / (time.perf_counter() - started)
        finally:
            process.terminate()
            process.wait(30)


def wait_empty(conn: psycopg.Connection[Any], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while conn.execute("SELECT EXISTS (SELECT FROM cdc_bridge.outbox)").fetchone() != (False,):
        if time.monotonic() > deadline:
            raise RuntimeError("the relay did not drain the outbox")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
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
            print(f"{args.changes} changes, {args.repeat} repetitions (median), req/s")
            print(f"{'concurrency':>11} {'bare':>9} {'relay':>9} {'ratio':>6}")
            for concurrency in (1, 8):
                bares, relays = [], []
                for _ in range(args.repeat):  # alternate, so drift hits both alike
                    bares.append(asyncio.run(bare(api_url, args.changes, concurrency)))
                    relays.append(relay(dsn, api_url, args.changes, concurrency, workdir))
                b, r = statistics.median(bares), statistics.median(relays)
                print(f"{concurrency:>11} {b:>9.0f} {r:>9.0f} {r / b:>6.2f}")
    finally:
        api.terminate()
        api.wait(10)


if __name__ == "__main__":
    main()
