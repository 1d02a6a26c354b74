"""HTTP stacks for the relay's batches: aiohttp against httpx, in the same run.

    .venv/bin/python bench/relay/bench_http.py [--batches 300] [--batch-size 500] [--repeat 3]

Both send the same signed batches of `--batch-size` changes (built once, the relay's own
`batch_body`) to the minimal acking peer of bench/relay/peer.py (its own process), four at
a time as the relay's four lanes do, and read the per-change results with the relay's
`read_results`:
  aiohttp: `BridgeEndpoint.deliver`, the relay's own path (peer.http.PeerClient, the
           bridge's one HTTP client);
  httpx:   the same steps through an httpx.AsyncClient set up as the REST kind's was
           before every request moved to aiohttp (keep-alive, TCP_NODELAY, the timeout).
The two take turns, `--repeat` times each. Printed: this process's CPU per batch (what
the client costs the relay) and batches/s, and the ratio httpx / aiohttp (median).
No database: only the HTTP client differs.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

from cdc_bridge.config import BridgeConfig, BridgePeer, parse_config
from cdc_bridge.peer.bridge import BridgeEndpoint, batch_body, read_results
from cdc_bridge.peer.endpoint import Delivery, Outgoing
from cdc_bridge.peer.http import signed_headers, tls_context
from cdc_bridge.peer.protocol import BATCH_PATH, Signer

ROOT = Path(__file__).resolve().parents[2]
LANES = 4  # relay.concurrency's default

Deliver = Callable[[str, Sequence[Outgoing]], Awaitable[Delivery]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_config(peer_url: str) -> BridgeConfig:
    data = yaml.safe_load((ROOT / "tests" / "fixtures" / "erp.yaml").read_text())
    data["database"]["url"] = "postgresql://bench@127.0.0.1/unused"
    data["peer"].update({"url": peer_url, "secret": "bench-secret"})
    return parse_config(yaml.safe_dump(data), "bench", {})


def changes(count: int) -> list[Outgoing]:
    now = datetime.now(UTC)
    return [
        Outgoing(
            id=i,
            idempotency_key=f"erp:{1000 + i // 7}:{i}",
            table="public.customers",
            op="I",
            key={"id": i},
            key_text=f'{{"id": {i}}}',
            fields={"id": i, "name": f"name {i}", "email": "x@example.com", "tier": "gold"},
            old=None,
            committed_at=now,
            origin="erp",
            txid=str(1000 + i // 7),
        )
        for i in range(1, count + 1)
    ]


class HttpxBatches:
    """`BridgeEndpoint.deliver`'s steps, sent with httpx instead of aiohttp."""

    def __init__(self, config: BridgeConfig) -> None:
        assert isinstance(config.peer, BridgePeer)
        self._system = config.system
        self._signer = Signer(config.peer.secrets)
        peer = config.peer
        verify: ssl.SSLContext | bool = tls_context(peer) or True
        transport = httpx.AsyncHTTPTransport(
            verify=verify, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        )
        self._http = httpx.AsyncClient(
            transport=transport, base_url=peer.url, timeout=peer.timeout_s
        )

    async def deliver(self, batch_id: str, sent: Sequence[Outgoing]) -> Delivery:
        body = batch_body(self._system, batch_id, sent)
        headers = signed_headers(self._signer, batch_id, body)
        started = time.perf_counter()
        response = await self._http.post(BATCH_PATH, content=body, headers=headers)
        assert response.status_code == 200, response.text
        return read_results(response.content, sent, started)

    async def aclose(self) -> None:
        await self._http.aclose()


async def _send_all(deliver: Deliver, batches: int, sent: list[Outgoing]) -> None:
    lanes = asyncio.Semaphore(LANES)

    async def one(n: int) -> None:
        async with lanes:
            delivery = await deliver(f"bench-{n}", sent)
            assert len(delivery.results) == len(sent), delivery.error

    await asyncio.gather(*(one(n) for n in range(batches)))


async def measure(
    stack: str, config: BridgeConfig, args: argparse.Namespace
) -> tuple[float, float]:
    """(CPU ms per batch in this process, batches/s) for one round of one stack."""
    sent = changes(args.batch_size)
    client: BridgeEndpoint | HttpxBatches
    client = BridgeEndpoint(config) if stack == "aiohttp" else HttpxBatches(config)

    async def deliver(batch_id: str, batch: Sequence[Outgoing]) -> Delivery:
        return await client.deliver(batch_id, batch)

    try:
        await _send_all(deliver, LANES * 2, sent)  # warm-up: connections, first use
        cpu, wall = time.process_time(), time.perf_counter()
        await _send_all(deliver, args.batches, sent)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.aclose()
    return cpu * 1000 / args.batches, args.batches / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    peer = subprocess.Popen([sys.executable, str(ROOT / "bench" / "relay" / "peer.py"), str(port)])
    try:
        _wait_listening(port)
        config = bench_config(f"http://127.0.0.1:{port}")
        runs: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "httpx": []}
        for _ in range(args.repeat):
            for stack in runs:
                runs[stack].append(asyncio.run(measure(stack, config, args)))
                print(f"{stack:8} cpu {runs[stack][-1][0]:6.2f} ms/batch  "
                      f"{runs[stack][-1][1]:7.1f} batches/s", flush=True)
    finally:
        peer.terminate()
        peer.wait(10)
    cpu = {s: statistics.median(r[0] for r in rs) for s, rs in runs.items()}
    rate = {s: statistics.median(r[1] for r in rs) for s, rs in runs.items()}
    print(f"\nbatch {args.batch_size}, {args.batches} batches, {LANES} lanes, median of "
          f"{args.repeat}:")
    for stack in runs:
        print(f"  {stack:8} {cpu[stack]:6.2f} ms CPU/batch  {rate[stack]:7.1f} batches/s")
    print(f"  httpx / aiohttp: CPU per batch x{cpu['httpx'] / cpu['aiohttp']:.2f}, "
          f"rate x{rate['httpx'] / rate['aiohttp']:.2f}")


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("the bench peer did not start")


if __name__ == "__main__":
    main()
