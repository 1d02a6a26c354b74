"""A/B of the relay's batch delivery path, client side: CPU per 500-change batch.

    PYTHON bench/relay/ab_deliver.py PORT

Sends 400 signed batches of 500 changes, four at a time, to bench/relay/peer.py listening
on PORT, through whichever cdc-bridge PYTHON's virtualenv has installed: its
`BridgeEndpoint` (peer/bridge.py), or before the peer seam its `BridgeClient`
(peer/client.py). Prints the version and the CPU ms per batch of this process. Run it
alternately with two virtualenvs (one per checkout) against the same peer; see
bench/README.md ("HTTP stacks").
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from cdc_bridge.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
BATCHES = 400


def client_and_change() -> tuple[str, Any, Any]:
    """(which, a factory of the batch client from a config, the change class)."""
    try:
        bridge = importlib.import_module("cdc_bridge.peer.bridge")
        endpoint = importlib.import_module("cdc_bridge.peer.endpoint")
        return "seam", bridge.BridgeEndpoint, endpoint.Outgoing
    except ImportError:
        client = importlib.import_module("cdc_bridge.peer.client")
        return "before", lambda c: client.BridgeClient(c.peer, c.system), client.Outgoing


async def measure(make: Any, outgoing: Any, port: int) -> float:
    data = yaml.safe_load((ROOT / "tests" / "fixtures" / "erp.yaml").read_text())
    data["database"]["url"] = "postgresql://bench@127.0.0.1/unused"
    data["peer"].update({"url": f"http://127.0.0.1:{port}", "secret": "bench-secret"})
    client = make(parse_config(yaml.safe_dump(data), "bench", {}))
    now = datetime.now(UTC)
    sent = [
        outgoing(
            id=i, idempotency_key=f"erp:{1000 + i // 7}:{i}", table="public.customers",
            op="I", key={"id": i}, key_text=f'{{"id": {i}}}',
            fields={"id": i, "name": f"name {i}", "email": "x@example.com", "tier": "gold"},
            old=None, committed_at=now, origin="erp", txid=str(1000 + i // 7),
        )
        for i in range(1, 501)
    ]
    lanes = asyncio.Semaphore(4)

    async def one(n: int) -> None:
        async with lanes:
            delivery = await client.deliver(f"ab-{n}", sent, 5)
            assert len(delivery.results) == len(sent), delivery.error

    await asyncio.gather(*(one(n) for n in range(8)))  # warm-up
    cpu = time.process_time()
    await asyncio.gather(*(one(n) for n in range(BATCHES)))
    cpu = time.process_time() - cpu
    await client.aclose()
    return cpu * 1000 / BATCHES


if __name__ == "__main__":
    which, make, outgoing = client_and_change()
    print(which, f"{asyncio.run(measure(make, outgoing, int(sys.argv[1]))):.3f} ms CPU/batch")
